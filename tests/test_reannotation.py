"""Tier "stochastic" with ``reference="reannotation"`` (Theorem 5 of docs/certificates.md).

Closed forms against a generic root finder and an explicit influence vector, the ordering
against Theorem 4, bad inputs, and an attack: votes drawn from adversarial but legal
distributions, the head refitted on an independent re-draw, violations counted per point.
"""

import math
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.optimize
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Ridge

from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer
from sklearn_cnat.certificates import Certificate, certify_ridge
from sklearn_cnat.certificates._ridge import _delta_min, _ridge_fit, _ridge_scores, _threshold_factor
from sklearn_cnat.exceptions import CertificationError


def _budget(counts, kind="votes", eps=0.0):
    counts = np.asarray(counts, dtype=float)
    K = counts.shape[1]
    if kind == "votes":
        base = counts / counts.sum(axis=1, keepdims=True)
    else:
        base = np.eye(K)[np.argmax(counts, axis=1)]
    return SimpleNamespace(pi=(1 - eps) * base + eps / K, counts=counts)


def _problem(seed, n=40, d=3, K=3, votes=3, test=12):
    rng = np.random.RandomState(seed)
    F = rng.randn(n, d)
    p = rng.dirichlet(np.full(K, 0.5), size=n)
    counts = np.stack([rng.multinomial(votes, q) for q in p]).astype(float)
    return F, counts, rng.randn(test, d)


def _influence(F, X, alpha):
    """h_i(x) of (C1), from scikit-learn's Ridge fitted on the unit label matrix."""
    return Ridge(alpha=alpha, fit_intercept=True, solver="cholesky").fit(F, np.eye(len(F))).predict(X)


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("K", [2, 3, 10, 100])
@pytest.mark.parametrize("delta", [1e-6, 0.05, 0.5, 0.99])
def test_threshold_solves_c23(K, delta):
    L = _threshold_factor(K, delta, "reannotation")  # t = sqrt(2 sigma^2 L), sigma = 1
    root = scipy.optimize.brentq(lambda t: (K - 1) * (math.exp(-t * t / 2) + math.exp(-t * t / 4)) - delta,
                                 1e-9, 100.0, xtol=1e-14, rtol=1e-15)
    t = math.sqrt(2 * L)
    assert t >= root  # rounded up: sound
    assert t == pytest.approx(root, rel=1e-12)
    assert _threshold_factor(K, delta, "expected") == pytest.approx(math.log((K - 1) / delta), rel=1e-15)


def test_delta_min_inverts_threshold():
    K, sigma = 7, np.array([0.3])
    for delta in (1e-4, 0.05, 0.7):
        t = math.sqrt(2 * 0.09 * _threshold_factor(K, delta, "reannotation"))
        assert _delta_min(np.array([t]), sigma, K, "reannotation")[0] == pytest.approx(delta, rel=1e-9)
        assert _delta_min(np.array([t * 1.001]), sigma, K, "reannotation")[0] < delta


@pytest.mark.parametrize("kind,eps,votes", [("votes", 0.0, 3), ("votes", 0.1, 5), ("plurality", 0.0, 3),
                                            ("plurality", 0.2, 1)])
def test_threshold_matches_explicit_sigma(kind, eps, votes):
    F, counts, X = _problem(1, n=60, d=4, K=4, votes=votes)
    budget = _budget(counts, kind, eps)
    cert = certify_ridge(F, budget, X, alpha=2.0, tier="stochastic", delta=0.1, reference="reannotation")
    assert cert.reference == "reannotation"
    want_kind = "votes" if kind == "votes" or votes == 1 else "plurality"
    assert cert.engine == f"ridge-hoeffding-reannotation-{want_kind}"
    h = _influence(F, X, 2.0)
    m = counts.sum(axis=1)
    v = (1 - eps) ** 2 / m if want_kind == "votes" else np.full(len(F), (1 - eps) ** 2)
    sigma2 = (h * h) @ v
    K = counts.shape[1]
    t = np.array([scipy.optimize.brentq(
        lambda s, s2=s2: (K - 1) * (math.exp(-s * s / (2 * s2)) + math.exp(-s * s / (4 * s2))) - 0.1, 1e-12, 1e3)
        for s2 in sigma2])
    np.testing.assert_allclose(cert.margin - cert.worst_case_margin, t, rtol=1e-7)
    # margins of the generic solver: explicit h times pi
    scores = h @ budget.pi
    top = np.sort(scores, axis=1)
    np.testing.assert_allclose(cert.margin, top[:, -1] - top[:, -2], atol=1e-9)
    pos = cert.margin > 0
    dm = np.minimum(1.0, (K - 1) * (np.exp(-cert.margin**2 / (2 * sigma2)) + np.exp(-cert.margin**2 / (4 * sigma2))))
    np.testing.assert_allclose(cert.delta_min[pos], dm[pos], rtol=1e-6)


def test_expected_is_unchanged_and_the_default():
    F, counts, X = _problem(2)
    budget = _budget(counts)
    default = certify_ridge(F, budget, X, alpha=1.0, tier="stochastic", delta=0.2)
    explicit = certify_ridge(F, budget, X, alpha=1.0, tier="stochastic", delta=0.2, reference="expected")
    assert default.reference == explicit.reference == "expected"
    assert default.engine == "ridge-hoeffding-votes"
    np.testing.assert_array_equal(default.worst_case_margin, explicit.worst_case_margin)
    np.testing.assert_array_equal(default.delta_min, explicit.delta_min)
    h = _influence(F, X, 1.0)
    sigma2 = (h * h) @ (1 / counts.sum(axis=1))
    t4 = np.sqrt(2 * sigma2 * math.log((counts.shape[1] - 1) / 0.2))
    np.testing.assert_allclose(default.margin - default.worst_case_margin, t4, rtol=1e-7)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), K=st.integers(2, 6), votes=st.integers(1, 4),
       delta=st.floats(1e-3, 0.95))
def test_reannotation_is_never_weaker_than_required(seed, K, votes, delta):
    """Threshold (C23) > threshold (C12): re-annotation certified implies expected certified."""
    F, counts, X = _problem(seed, n=25, d=2, K=K, votes=votes, test=8)
    budget = _budget(counts)
    exp_ = certify_ridge(F, budget, X, alpha=1.0, tier="stochastic", delta=delta)
    re = certify_ridge(F, budget, X, alpha=1.0, tier="stochastic", delta=delta, reference="reannotation")
    assert np.all(re.certified <= exp_.certified)
    assert np.all(re.worst_case_margin < exp_.worst_case_margin)
    assert np.all(re.delta_min >= exp_.delta_min)
    np.testing.assert_array_equal(re.prediction, exp_.prediction)
    # certified at delta iff delta > delta_min, up to the rounding allowance at the boundary
    clear = np.abs(re.delta_min - delta) > 1e-6 * delta
    assert np.all(re.certified[clear] == (re.delta_min[clear] < delta))


@settings(max_examples=200, deadline=None)
@given(p=st.lists(st.floats(0, 1), min_size=3, max_size=3).filter(lambda q: sum(q) > 0),
       s=st.floats(0, 8))
def test_lemma6_cosh_bound(p, s):
    """E exp(s (g - g')) <= cosh(s)^2 for g, g' iid on {-1, 0, 1} (docs/certificates.md, Lemma 6)."""
    q = np.asarray(p) / sum(p)
    vals = np.array([-1.0, 0.0, 1.0])
    mgf = q @ np.exp(s * vals)
    mgf_neg = q @ np.exp(-s * vals)
    assert mgf * mgf_neg <= math.cosh(s) ** 2 * (1 + 1e-12)
    assert math.cosh(s) ** 2 <= math.exp(s * s) * (1 + 1e-12)  # never weaker than Hoeffding's two halves


# --------------------------------------------------------------------------- the attack


def _legal_p(kind, rng, n, K, F):
    """Adversarial but legal per-item vote distributions."""
    if kind == "near_tie":  # two classes almost tied everywhere, the tilt following a feature
        p = np.zeros((n, K))
        tilt = 0.04 * np.sign(F[:, 0])
        p[:, 0], p[:, 1] = 0.5 + tilt, 0.5 - tilt
        return p
    if kind == "many_classes":  # half the mass on one of two classes (by a feature), the rest spread thinly
        p = np.full((n, K), 0.5 / (K - 1))
        p[np.arange(n), (F[:, 0] > 0).astype(int)] = 0.5
        return p
    if kind == "skewed":  # one dominant item group, sparse distributions
        return rng.dirichlet(np.full(K, 0.2), size=n)
    raise ValueError(kind)


ATTACKS = [  # (name, p kind, n items, d, K classes, votes per item, alpha)
    ("near tie, one vote per item", "near_tie", 30, 2, 2, 1, 3.0),
    ("near tie, three votes", "near_tie", 40, 2, 3, 3, 3.0),
    ("many classes, one vote", "many_classes", 80, 2, 10, 1, 10.0),
    ("few items, skewed", "skewed", 8, 1, 2, 3, 3.0),
    ("skewed, two votes", "skewed", 25, 3, 4, 2, 1.0),
]
DELTAS = (0.2, 0.5, 0.9)


def _draw(rng, p, votes):
    return np.stack([rng.multinomial(votes, q) for q in p]).astype(float)


def _served(F, counts, X, alpha):
    coef, intercept = _ridge_fit(F, _budget(counts).pi, alpha)
    return np.argmax(_ridge_scores(X, coef, intercept), axis=1)


@pytest.mark.parametrize("name,kind,n,d,K,votes,alpha", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_attack_violations_at_most_delta(name, kind, n, d, K, votes, alpha):
    rng = np.random.RandomState(zlib.crc32(name.encode()))
    F = rng.randn(n, d)
    X = np.concatenate([rng.randn(6, d), F[:3] * 1.5])
    p = _legal_p(kind, rng, n, K, F)
    trials = 300
    violations = {dl: np.zeros(len(X), dtype=int) for dl in DELTAS}
    certified = {dl: 0 for dl in DELTAS}
    changed_any = 0
    for _ in range(trials):
        counts = _draw(rng, p, votes)
        cert = certify_ridge(F, _budget(counts), X, alpha=alpha, tier="stochastic", delta=0.5,
                             reference="reannotation")
        base = np.asarray(cert.prediction)
        assert np.array_equal(base, _served(F, counts, X, alpha))
        again = _served(F, _draw(rng, p, votes), X, alpha)  # independent re-annotation, refit
        changed = again != base
        changed_any += int(changed.sum())
        for dl in DELTAS:
            ok = cert.delta_min < dl  # certified at dl (Theorem 5: certified for every delta > delta_min)
            violations[dl] += ok & changed
            certified[dl] += int(ok.sum())
        assert np.array_equal(cert.certified, cert.delta_min < 0.5) or np.all(
            np.abs(cert.delta_min[cert.certified != (cert.delta_min < 0.5)] - 0.5) < 1e-6)
    assert certified[0.9] > 0, "vacuous attack: nothing certified"
    assert changed_any > 0, "vacuous attack: the re-annotation never changed a prediction"
    for dl in DELTAS:
        # per point: binomial(trials, rate <= dl); a seeded one-in-a-million margin
        limit = scipy.stats.binom.ppf(1 - 1e-6, trials, dl)
        assert violations[dl].max() <= limit, (name, dl, violations[dl])


def test_attack_detects_an_unsound_rule():
    """The same attack on the near tie catches a rule that certifies every positive margin."""
    rng = np.random.RandomState(5)
    n, K, votes, alpha = 30, 2, 1, 3.0
    F = rng.randn(n, 2)
    X = rng.randn(6, 2)
    p = _legal_p("near_tie", rng, n, K, F)
    trials, delta = 300, 0.2
    violations = np.zeros(len(X), dtype=int)
    for _ in range(trials):
        counts = _draw(rng, p, votes)
        coef, intercept = _ridge_fit(F, _budget(counts).pi, alpha)
        scores = _ridge_scores(X, coef, intercept)
        top = np.sort(scores, axis=1)
        naive = top[:, -1] - top[:, -2] > 0  # "certified" with threshold 0
        violations += naive & (np.argmax(scores, axis=1) != _served(F, _draw(rng, p, votes), X, alpha))
    assert violations.max() > scipy.stats.binom.ppf(1 - 1e-6, trials, delta)


# --------------------------------------------------------------------------- estimator, scorers, errors


def _fitted():
    rng = np.random.RandomState(0)
    X = rng.randn(120, 3)
    y = (X[:, 0] > 0).astype(int)
    votes = np.stack([np.bincount(np.where(rng.rand(3) < 0.8, yi, 1 - yi), minlength=2) for yi in y])
    clf = CNATClassifier(head="ridge", alpha=1.0,
                         budget=NoiseBudgetTransformer(pi="votes", mapping="flat", radius=0.05)).fit(X, votes)
    return clf, X, votes


def test_estimator_and_scorers():
    from sklearn_cnat.metrics import get_scorer

    clf, X, votes = _fitted()
    cert = clf.certify(X[:40], tier="stochastic", reference="reannotation")
    assert cert.reference == "reannotation" and cert.engine.startswith("ridge-hoeffding-reannotation")
    assert clf.certify(X[:40]).reference == "expected"
    exp_cov = get_scorer("cnr_coverage_stochastic")(clf, X[:40], votes[:40])
    re_cov = get_scorer("cnr_coverage_reannotation")(clf, X[:40], votes[:40])
    assert re_cov == cert.coverage <= exp_cov
    assert 0 <= get_scorer("certified_accuracy_reannotation")(clf, X[:40], votes[:40]) <= re_cov
    assert "reference='reannotation'" in repr(get_scorer("cnr_coverage_reannotation"))


def test_bad_reference():
    F, counts, X = _problem(3)
    budget = _budget(counts)
    with pytest.raises(CertificationError, match="unknown reference 'fresh'"):
        certify_ridge(F, budget, X, alpha=1.0, tier="stochastic", reference="fresh")
    with pytest.raises(CertificationError, match="reference is only used by tier='stochastic'"):
        certify_ridge(F, SimpleNamespace(pi=budget.pi, r=np.full(len(F), 0.1)), X, alpha=1.0, tier="bounded",
                      reference="reannotation")
    with pytest.raises(CertificationError, match="reference is only used by tier='stochastic'"):
        certify_ridge(F, budget, X, alpha=1.0, tier="flip", m=1, reference="expected")
    clf, Xc, _ = _fitted()
    with pytest.raises(CertificationError, match="reference is only used by tier='stochastic'"):
        clf.certify(Xc[:5], tier="bounded", reference="reannotation")
    with pytest.raises(CertificationError, match="unknown reference"):
        clf.certify(Xc[:5], tier="stochastic", reference="Reannotation")
    with pytest.raises(CertificationError, match="Certificate.reference is only for tier 'stochastic'"):
        Certificate(tier="flip", scope="model", engine="x", prediction=np.array([0]), certified=np.array([True]),
                    margin=np.array([1.0]), worst_case_margin=np.array([1.0]), max_flips=np.array([1]), m=1,
                    reference="reannotation")
    from sklearn_cnat.metrics import make_cnr_scorer

    with pytest.raises(ValueError, match="reference"):
        make_cnr_scorer(tier="stochastic", reference="fresh")


def test_cli_accepts_reference():
    from sklearn_cnat.cli import build_parser

    args = build_parser().parse_args(["run", "--reference", "reannotation"])
    assert args.reference == "reannotation"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--reference", "fresh"])


# --------------------------------------------------------------------------- the benchmark's functions


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("reannotation_cifar10n.py", "reannotation_benchmark")


def test_lemma6_tail_is_a_sharper_valid_bound(bench):
    """Never above Hoeffding's exp(-M^2 / (4 sigma^2)); above the Monte-Carlo tail of D (one vote per item)."""
    rng = np.random.RandomState(11)
    n = 5
    H = np.abs(rng.randn(3, n)) * np.array([[1.0], [0.2], [3.0]])
    H[:, 0] *= 6  # one dominant item: where Lemma 6 is sharper
    M = np.abs(H).sum(axis=1) * np.array([0.6, 1.2, 1.8])  # D <= 2 sum |h_i|
    tail = bench.lemma6_tail(H, M, np.ones(n))
    hoeff = np.exp(-M**2 / (4 * (H * H).sum(axis=1)))
    assert np.all(tail <= hoeff * (1 + 1e-12))
    assert np.any(tail < 0.9 * hoeff)
    # worst legal law for each term: g = +-1 with probability 1/2 (two-point, symmetric)
    draws = 200_000
    g = rng.choice([-1.0, 1.0], size=(draws, n)) - rng.choice([-1.0, 1.0], size=(draws, n))
    for i in range(len(M)):
        mc = np.mean(g @ H[i] >= M[i])
        assert mc <= tail[i] + 4 * math.sqrt(max(tail[i], 1e-4) / draws)


def test_benchmark_rows_on_synthetic_annotations(bench, tmp_path):
    rng = np.random.RandomState(0)
    n, d, K = 600, 4, 3
    y = rng.randint(0, K, n)
    F = rng.randn(n, d) + 3.0 * np.eye(K, d)[y]
    ann = {f"random{k}": np.where(rng.rand(n) < 0.85, y, rng.randint(0, K, n)) for k in (1, 2, 3)}
    yt = rng.randint(0, K, 80)
    Ft = rng.randn(80, d) + 3.0 * np.eye(K, d)[yt]
    rows = bench.reannotation_rows(F, Ft, ann, yt, n_classes=K, lemma6_points=20, alpha_grid=[1.0, 10.0])
    assert len(rows) == 6
    for r in rows:
        assert r["coverage_reannotation"] <= r["coverage_expected"]
        assert r["changed_certified"] <= r["n_certified"]
        assert r["coverage_reannotation_lemma6"] >= r["coverage_reannotation_subset"] - 1e-12
    two = bench.two_vote_rows(F, Ft, ann, n_classes=K, alpha_grid=[1.0])
    assert len(two) == 3 and all(t["coverage_reannotation"] <= t["coverage_expected"] for t in two)
    bench.write_markdown(tmp_path / "t.md", rows, dict(data="synthetic", features="Gaussian", n_train=n, n_test=80,
                                                       lemma6_points=20, machine="x", seconds=0.0), "cmd", two)
    text = (tmp_path / "t.md").read_text()
    assert "| random1 | random2 |" in text and "Two annotations" in text


def test_docs_decomposition_table():
    """The thresholds quoted in docs/certificates.md, 3.1 ("Which decomposition")."""
    from pathlib import Path

    K, delta = 10, 0.05
    bounds = {
        "Theorem 4 (bounds": lambda t: (K - 1) * math.exp(-t * t / 2),
        "**difference": lambda t: (K - 1) * (math.exp(-t * t / 2) + math.exp(-t * t / 4)),
        "every ordered pair": lambda t: K * (K - 1) * math.exp(-t * t / 4),
        "triangle via": lambda t: (K - 1) * (math.exp(-t * t / 2) + 2 * math.exp(-t * t / 8)),
    }
    text = (Path(__file__).resolve().parents[1] / "docs" / "certificates.md").read_text()
    section = text.split("*Which decomposition.*")[1].split("### 3.2")[0]
    for start, bound in bounds.items():
        t = scipy.optimize.brentq(lambda s: bound(s) - delta, 0.1, 50.0)
        row = next(line for line in section.splitlines() if line.startswith(f"| {start}"))
        assert row.rstrip(" |*").endswith(f"{t:.2f}"), (row, t)
