"""Served equals certified: the prediction a certificate speaks of is the one ``predict(x)`` serves.

Attacks of the soundness review (issue "Soundness holes"): features that move with batch
composition, feature matrices rounded to float32, scope declarations.
"""

import mpmath
import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from torch import nn

from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer
from sklearn_cnat.baselines import BaselineClassifier
from sklearn_cnat.exceptions import CNATValueError


class _MLP(nn.Module):
    def __init__(self, num_classes=3, in_features=8):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


def _boundary_points(predict_one, X, n_pairs, rng, spread=3e-7, per_pair=9):
    """Points straddling decision boundaries: bisect between differently predicted rows."""
    labels = np.array([predict_one(x) for x in X])
    out = []
    for _ in range(200):
        if len(out) >= n_pairs * per_pair:
            break
        i, j = rng.choice(len(X), 2, replace=False)
        if labels[i] == labels[j]:
            continue
        a, b = X[i].astype(np.float64), X[j].astype(np.float64)
        lo, hi = 0.0, 1.0
        for _ in range(45):
            mid = (lo + hi) / 2
            if predict_one((1 - mid) * a + mid * b) == labels[i]:
                lo = mid
            else:
                hi = mid
        for s in np.linspace(lo - spread, hi + spread, per_pair):
            out.append((1 - s) * a + s * b)
    return np.array(out)


def _exact_ridge_argmax(F, Q, alpha, X, dps=60):
    """Ridge(alpha, fit_intercept=True) scores' arg-max at X in mpmath (ties: lowest index)."""
    with mpmath.workdps(dps):
        n, d = F.shape
        Fm = mpmath.matrix(F.tolist())
        Qm = mpmath.matrix(Q.tolist())
        fbar = [mpmath.fsum(Fm[i, j] for i in range(n)) / n for j in range(d)]
        qbar = [mpmath.fsum(Qm[i, k] for i in range(n)) / n for k in range(Q.shape[1])]
        Fc = mpmath.matrix(n, d)
        for i in range(n):
            for j in range(d):
                Fc[i, j] = Fm[i, j] - fbar[j]
        A = Fc.T * Fc + alpha * mpmath.eye(d)
        Qc = mpmath.matrix(n, Q.shape[1])
        for i in range(n):
            for k in range(Q.shape[1]):
                Qc[i, k] = Qm[i, k] - qbar[k]
        rhs = Fc.T * Qc
        cols = [mpmath.lu_solve(A, rhs.column(k)) for k in range(Q.shape[1])]
        W = mpmath.matrix(d, Q.shape[1])
        for k, col in enumerate(cols):
            for j in range(d):
                W[j, k] = col[j]
        out = []
        for x in X:
            s = [qbar[k] + mpmath.fsum((mpmath.mpf(x[j]) - fbar[j]) * W[j, k] for j in range(d))
                 for k in range(Q.shape[1])]
            out.append(max(range(len(s)), key=lambda k: (s[k], -k)))
        return np.array(out)


# ----------------------------------------------------------------------------- float64 features


def test_feature_matrix_kept_in_float64_matches_ridge():
    rng = np.random.default_rng(0)
    n, K = 200, 2
    y = rng.integers(K, size=n)
    F = 1e7 + 0.2 * (2 * y[:, None] - 1) + 0.1 * rng.normal(size=(n, 2))
    yt = rng.integers(K, size=300)
    Xt = 1e7 + 0.2 * (2 * yt[:, None] - 1) + 0.1 * rng.normal(size=(300, 2))
    clf = CNATClassifier(head="ridge", alpha=1e-3, budget=NoiseBudgetTransformer(radius=0.0))
    clf.fit(F, np.eye(K, dtype=int)[y] * 3)
    assert np.array_equal(clf.train_features_, F)  # as given, not rounded
    assert np.array_equal(clf.feature_map(Xt), Xt)
    ridge = Ridge(alpha=1e-3).fit(F, np.eye(K)[y])
    scores = ridge.predict(Xt)
    clear = np.abs(scores[:, 1] - scores[:, 0]) > 1e-6  # Ridge's own rounding cannot decide these
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(clf.predict(Xt)[clear], scores.argmax(1)[clear])
    np.testing.assert_allclose(clf.coef_, ridge.coef_.T, rtol=1e-6, atol=1e-9)
    cert = clf.certify(Xt, tier="bounded")
    assert np.all(cert.prediction[cert.certified & clear] == scores.argmax(1)[cert.certified & clear])
    assert clf.score(Xt, yt) > 0.95


def test_uint8_feature_matrix_is_not_rescaled():
    rng = np.random.default_rng(1)
    X = rng.integers(0, 255, size=(60, 4)).astype(np.uint8)
    y = (X[:, 0] > 127).astype(int)
    clf = CNATClassifier(head="ridge").fit(X, y)
    np.testing.assert_array_equal(clf.train_features_, X.astype(np.float64))


# ----------------------------------------------------------------------------- linear head


def test_served_equals_certified_linear_head_against_exact_ridge():
    rng = np.random.default_rng(2)
    n, d, K = 40, 3, 3
    F = rng.normal(size=(n, d)) * np.array([1.0, 1e-3, 1e3])
    y = rng.integers(K, size=n)
    alpha = 0.5
    clf = CNATClassifier(head="ridge", alpha=alpha, budget=NoiseBudgetTransformer(radius=0.0))
    clf.fit(F, np.eye(K, dtype=int)[y] * 3)
    pool = rng.normal(size=(60, d)) * np.array([1.0, 1e-3, 1e3])
    pts = _boundary_points(lambda x: clf.predict(x[None])[0], pool, 6, rng)
    filler = rng.normal(size=(127, d)) * np.array([1.0, 1e-3, 1e3])
    alone = np.array([clf.predict(x[None])[0] for x in pts])
    exact = _exact_ridge_argmax(F, np.eye(K)[y], alpha, pts)
    for chunk in (1, 7, len(pts)):
        for start in range(0, len(pts), chunk):
            part = pts[start:start + chunk]
            batch = np.vstack([filler[: 127 - len(part) % 5], part])
            cert = clf.certify(batch, tier="bounded")
            served = cert.prediction[-len(part):]
            ok = cert.certified[-len(part):]
            np.testing.assert_array_equal(served, alone[start:start + chunk])  # same class as served alone
            np.testing.assert_array_equal(clf.predict(batch)[-len(part):], alone[start:start + chunk])
            assert np.all(served[ok] == exact[start:start + chunk][ok])  # certified => exact arg-max


# ----------------------------------------------------------------------------- networks


@pytest.fixture(scope="module")
def mlp_ridge():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    y = (X[:, :3].argmax(1)).astype(int)
    torch.manual_seed(0)
    clf = CNATClassifier(module=_MLP, max_epochs=0, head="ridge", alpha=1.0, random_state=0,
                         budget=NoiseBudgetTransformer(radius=0.0)).fit(X[:200], np.eye(3, dtype=int)[y[:200]] * 3)
    return clf, X[200:]


def test_network_features_do_not_depend_on_the_batch(mlp_ridge):
    clf, X = mlp_ridge
    full = clf.feature_map(X)
    for i in (0, 17, 99):
        np.testing.assert_array_equal(clf.feature_map(X[i:i + 1])[0], full[i])
    np.testing.assert_array_equal(clf.feature_map(X[::-1])[::-1], full)


def test_served_equals_certified_network(mlp_ridge):
    clf, X = mlp_ridge
    assert clf.scope_ == "model"
    rng = np.random.default_rng(4)
    pts = _boundary_points(lambda x: clf.predict(x[None].astype(np.float32))[0], X, 6, rng).astype(np.float32)
    alone = np.array([clf.predict(x[None])[0] for x in pts])
    filler = X[:50]
    for chunk in (3, len(pts)):
        for start in range(0, len(pts), chunk):
            part = pts[start:start + chunk]
            cert = clf.certify(np.vstack([filler, part]), tier="bounded")
            np.testing.assert_array_equal(cert.prediction[len(filler):], alone[start:start + chunk])
            p = clf.predict(np.vstack([part, filler]))[:len(part)]
            np.testing.assert_array_equal(p, alone[start:start + chunk])


@pytest.mark.parametrize("make", [
    lambda: CNATClassifier(module=_MLP, max_epochs=2, batch_size=32, random_state=0),
    lambda: BaselineClassifier(module=_MLP, max_epochs=2, batch_size=32, random_state=0),
])
def test_network_outputs_are_batch_invariant(make):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(150, 8)).astype(np.float32)
    y = X[:, :3].argmax(1)
    clf = make().fit(X[:100], y[:100])
    full = clf.predict_proba(X[100:])
    for sl in (slice(0, 1), slice(3, 20), slice(49, 50)):
        np.testing.assert_array_equal(clf.predict_proba(X[100:][sl]), full[sl])
    np.testing.assert_array_equal(clf.decision_function(X[100:][::-1])[::-1], clf.decision_function(X[100:]))


# ----------------------------------------------------------------------------- scope


def test_scope_declared_and_refused():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(80, 4))
    y = rng.integers(0, 3, 80)
    clf = CNATClassifier(head="ridge", scope="head").fit(X, y)
    assert clf.scope_ == "head"
    assert clf.certify(X[:5], tier="flip", m=1).scope == "head"
    assert CNATClassifier(head="ridge").fit(X, y).scope_ == "model"
    with pytest.raises(CNATValueError, match="scope='model' is not sound"):
        CNATClassifier(module=_MLP, module_kwargs={"in_features": 4}, max_epochs=1, head="ridge",
                       scope="model").fit(X.astype(np.float32), y)
    with pytest.raises(CNATValueError, match="scope must be"):
        CNATClassifier(scope="whole").fit(X, y)


# ----------------------------------------------------------------------------- trivial KL sets


def test_kl_ball_around_one_hot_warns():
    from sklearn_cnat.exceptions import TrivialCertificateWarning

    rng = np.random.default_rng(7)
    X = rng.normal(size=(60, 3))
    y = rng.integers(0, 3, 60)
    clf = CNATClassifier(head="ridge", geometry="kl",
                         budget=NoiseBudgetTransformer(pi="onehot", radius=0.05)).fit(X, np.eye(3, dtype=int)[y] * 3)
    with pytest.warns(TrivialCertificateWarning, match="one-hot pi"):
        clf.certify(X[:5], tier="bounded")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", TrivialCertificateWarning)
        clf.certify(X[:5], tier="flip", m=1)  # the flip tier does not read the sets
        CNATClassifier(head="ridge", geometry="l1", budget=NoiseBudgetTransformer(pi="onehot", radius=0.05)) \
            .fit(X, y).certify(X[:5], tier="bounded")


def test_flip_tier_with_classes_read_off_labels_keeps_more_than_m_rows_of_the_served_class():
    rng = np.random.default_rng(8)
    X = np.vstack([rng.normal(size=(40, 2)), [[6.0, 6.0]]])
    y = np.r_[rng.integers(0, 2, 40), 2]  # class 2 has a single example
    Xt = np.array([[6.0, 6.0], [6.2, 5.9]])
    clf = CNATClassifier(head="ridge", alpha=1e-3).fit(X, y)
    assert clf._classes_inferred() and (clf.predict(Xt) == 2).all()
    assert not clf.certify(Xt, tier="flip", m=1).certified.any()  # one flip removes class 2
    declared = CNATClassifier(head="ridge", alpha=1e-3, budget=NoiseBudgetTransformer(classes=[0, 1, 2])).fit(X, y)
    assert not declared._classes_inferred()
    np.testing.assert_array_equal(declared.certify(Xt, tier="flip", m=0).certified,
                                  clf.certify(Xt, tier="flip", m=0).certified)
