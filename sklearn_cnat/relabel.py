"""Relabeling guidance: which training examples deserve extra votes.

:func:`suggest_relabels` ranks training examples by how much buying ``k`` more
votes for them would raise certified coverage (tier "stochastic") on an
evaluation set, for the exact ridge engine. The scores are linear in the nominal
labels (eq. (C1) of docs/certificates.md): ``k`` new votes on row ``i`` move the
scores of every evaluation point ``x`` by ``h_i(x) (pi'_i - pi_i)`` and the
Hoeffding variance ``sigma^2`` of (C12) by ``h_i(x)^2 (v'_i - v_i)``. For an estimator
fitted with ``sample_weight``, ``h_i`` is the weighted influence (C31) (section 9).

``strategy="expected"`` (the default) takes the expectation over the outcomes of
the new votes under a vote model, and picks greedily in blocks, so the first picks
change the value of the next. With ``bandwidth=None`` it is the expected change of
the number of certified points, exact (every multiset of ``k`` votes is enumerated,
with its probability); after each block the scores are updated in ``n_scenarios``
seeded draws of the block's votes and the leading candidates re-scored. With a
bandwidth (the default) it is the expected change, to first order, of a smoothed
coverage that counts every point near the threshold by how far a pick moves it; the
state then moves by the picks' expected change. ``strategy="assumed"`` is the former ranking: single-example effects of
``k`` votes assumed to agree with the plurality (or to equal the model's expected
counts). Both ignore the float rounding allowance (C15), many orders of magnitude
below the margins.
"""

import itertools
import math

import numpy as np

from .exceptions import CNATValueError, CertificationError

__all__ = ["suggest_relabels"]


def _top2(scores):
    """Arg-max (ties to the lowest index) and top1 - top2 margin along the last axis."""
    pred = np.argmax(scores, axis=-1)
    top = np.take_along_axis(scores, pred[..., None], axis=-1)[..., 0]
    rest = scores.copy()
    np.put_along_axis(rest, pred[..., None], -np.inf, axis=-1)
    return pred, top - rest.max(axis=-1)


def _relabel_effect(H, S, sigma2, delta_pi, delta_v, log_ratio):
    """Per-candidate change of the number of certified points and of the total slack.

    Parameters
    ----------
    H : ndarray of shape (T, n)
        Influence rows of T evaluation points.
    S : ndarray of shape (T, K)
        Current scores.
    sigma2 : ndarray of shape (T,)
        Current ``sum_i h_i^2 v_i``.
    delta_pi : ndarray of shape (n, K)
        Change of each candidate's nominal row.
    delta_v : ndarray of shape (n,)
        Change of each candidate's variance weight ``v_i``.
    log_ratio : float
        ``log((K - 1) / delta)``.

    Returns
    -------
    gained, lost, slack_gain : ndarrays of shape (n,)
    """
    _, margin = _top2(S)
    slack = margin - np.sqrt(2.0 * sigma2 * log_ratio)
    cert = slack > 0
    new_scores = S[:, None, :] + H[:, :, None] * delta_pi[None, :, :]
    _, new_margin = _top2(new_scores)
    new_sigma2 = np.maximum(sigma2[:, None] + H**2 * delta_v[None, :], 0.0)
    new_slack = new_margin - np.sqrt(2.0 * new_sigma2 * log_ratio)
    new_cert = new_slack > 0
    gained = (new_cert & ~cert[:, None]).sum(axis=0)
    lost = (~new_cert & cert[:, None]).sum(axis=0)
    slack_gain = (np.minimum(new_slack, 0.0) - np.minimum(slack, 0.0)[:, None]).sum(axis=0)
    return gained, lost, slack_gain


def _head_budget(estimator):
    """Budgets of the rows the head was fitted on (all rows unless ``feature_split``)."""
    return estimator._head_budget() if hasattr(estimator, "_head_budget") else estimator.budget_


def _head_weights(estimator):
    """Row weights of the head's training rows (docs/certificates.md, section 9), or None."""
    return estimator._head_weights() if hasattr(estimator, "_head_weights") else None


def _held_head_rows(estimator, n_head):
    """Head rows whose labels are held fixed (``split_head="all"``: the backbone's), bool (n_head,)."""
    return estimator._held_rows() if hasattr(estimator, "_held_rows") else np.zeros(n_head, dtype=bool)


def _head_index(estimator, n_head):
    """Training-set positions of the head rows."""
    rows = getattr(estimator, "head_rows_", None)
    return np.arange(n_head) if rows is None else np.flatnonzero(rows)


def _expected_new_votes(estimator, assume, plural):
    """(n, K) distribution each of the k extra votes is assumed to follow."""
    n_train, K = _head_budget(estimator).pi.shape
    if assume == "plurality":
        return np.eye(K)[plural]
    from scipy.special import softmax

    from ._calibration import _ridge_loo_scores

    loo = _ridge_loo_scores(estimator.train_features_, _head_budget(estimator).pi, estimator.alpha_,
                            estimator.coef_, estimator.intercept_, _head_weights(estimator))
    return softmax(loo / estimator.temperature_, axis=1)


# --------------------------------------------------------------------------- vote models


def _vote_outcomes(n_classes, k):
    """Every multiset of ``k`` votes over ``n_classes`` classes, as count vectors.

    Returns
    -------
    outcomes : ndarray of int of shape (C(n_classes + k - 1, k), n_classes)
    """
    combos = list(itertools.combinations_with_replacement(range(n_classes), k))
    out = np.zeros((len(combos), n_classes), dtype=np.int64)
    for row, combo in enumerate(combos):
        np.add.at(out[row], list(combo), 1)
    return out


def _multinomial_pmf(outcomes, p):
    """``P[counts of k i.i.d. votes = outcome]`` for votes with law ``p``.

    Parameters
    ----------
    outcomes : ndarray of shape (n_out, K)
        Count vectors summing to ``k``.
    p : ndarray of shape (m, K)
        One vote law per row (rows on the simplex).

    Returns
    -------
    pmf : ndarray of shape (m, n_out)
    """
    k = int(outcomes[0].sum())
    coef = math.factorial(k) / np.prod([[math.factorial(int(c)) for c in row] for row in outcomes], axis=1)
    return coef[None, :] * np.prod(np.asarray(p, dtype=np.float64)[:, None, :] ** outcomes[None], axis=2)


def _confusion_posterior(prior, counts, channel):
    """Posterior over the true class given the votes: ``prior_j prod_a channel[a, j]^counts_a``.

    Parameters
    ----------
    prior : ndarray of shape (n, K)
        Out-of-sample class probabilities (never fitted on the row's own votes).
    counts : ndarray of shape (n, K)
        Votes already bought.
    channel : ndarray of shape (K, K)
        ``channel[a, j] = P(vote a | true class j)`` (columns on the simplex).

    Returns
    -------
    posterior : ndarray of shape (n, K)
    """
    log_post = np.log(np.clip(prior, 1e-300, None)) + counts @ np.log(np.clip(channel, 1e-300, None))
    log_post -= log_post.max(axis=1, keepdims=True)
    post = np.exp(log_post)
    return post / post.sum(axis=1, keepdims=True)


def _outcome_probs(outcomes, vote_law=None, posterior=None, channel=None):
    """Probability of each outcome of the new votes, per row.

    Either i.i.d. votes with a law per row (``vote_law``), or votes i.i.d. given a latent
    true class ``j ~ posterior`` with law ``channel[:, j]`` (a mixture: the new votes are
    correlated through ``j``).

    Returns
    -------
    probs : ndarray of shape (n, n_out)
    """
    if vote_law is not None:
        return _multinomial_pmf(outcomes, vote_law)
    return posterior @ _multinomial_pmf(outcomes, np.asarray(channel).T)


def _new_rows(counts, eps, kind, outcomes):
    """Nominal rows and variance weights of Theorem 4 after each outcome of the new votes.

    Returns
    -------
    new_pi : ndarray of shape (n, n_out, K)
    new_v : ndarray of shape (n,)
        Does not depend on the outcome (only on the number of votes).
    """
    n, K = counts.shape
    new_counts = counts[:, None, :] + outcomes[None, :, :]
    votes = counts.sum(axis=1) + outcomes[0].sum()
    if kind == "votes":
        return (1 - eps) * new_counts / votes[:, None, None] + eps / K, (1 - eps) ** 2 / votes
    onehot = np.eye(K)[np.argmax(new_counts, axis=2)]  # ties to the lowest index, as the budget's plurality
    return (1 - eps) * onehot + eps / K, np.full(n, (1 - eps) ** 2)


# --------------------------------------------------------------------------- expected gain


def _influence_factors(F_train, F_eval, alpha, sample_weight=None):
    """``G`` (T, d) and ``Fc`` (n, d) with influence ``H = G Fc^T + c``.

    Unweighted (eq. (C1)): ``Fc = F - Fbar``, ``c = 1/n``. With ``sample_weight`` ``w``
    (eq. (C31), docs/certificates.md section 9): ``Fbar_w = w^T F / S``, ``S = sum_i w_i``,
    ``A_w = (F - Fbar_w)^T diag(w) (F - Fbar_w) + alpha I``, ``G = (F_eval - Fbar_w) A_w^{-1}``,
    the returned ``Fc`` is ``Fc_w[i] = w_i (f_i - Fbar_w)`` and the offsets are
    ``c = w / S`` (:func:`_influence_offsets`).
    """
    import scipy.linalg

    F = np.asarray(F_train, dtype=np.float64)
    if sample_weight is None:
        f_mean = F.mean(axis=0)
        Fc = F - f_mean
        A = Fc.T @ Fc
    else:
        w = np.asarray(sample_weight, dtype=np.float64)
        f_mean = (w @ F) / w.sum()
        Fc = F - f_mean
        Fc_w = Fc * w[:, None]
        A = Fc_w.T @ Fc
        A = np.tril(A) + np.tril(A, -1).T
    A[np.diag_indices_from(A)] += alpha
    G = scipy.linalg.cho_solve(scipy.linalg.cho_factor(A, lower=True), (np.asarray(F_eval) - f_mean).T).T
    return (G, Fc) if sample_weight is None else (G, Fc_w)


def _influence_offsets(sample_weight):
    """Per-row constant ``c`` of ``H = G Fc^T + c``: None for ``1/n`` (unweighted), else ``w / S`` (C31)."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    return w / w.sum()


def _offset(c, n, rows=None):
    """The offsets of ``rows`` (all when None), or the scalar ``1/n`` when unweighted (``c`` None)."""
    if c is None:
        return 1.0 / n
    return c if rows is None else c[rows]


def _margin(scores):
    """Top-1 minus top-2 score along the last axis."""
    part = np.partition(scores, -2, axis=-1)
    return part[..., -1] - part[..., -2]


def _expected_gain(H, S, sigma2, D, dv, P, log_ratio, block=1 << 21):
    """Expected change of the number of certified points, per candidate, averaged over scenarios.

    A point ``x`` is certified iff ``margin(S(x)) > t = sqrt(2 sigma^2(x) log_ratio)`` (C14).
    New votes on row ``j`` with outcome ``o`` give ``S + h_j D[j, o]`` and
    ``sigma^2 + h_j^2 dv_j``. The top-1 and top-2 scores are 1-Lipschitz in the max norm,
    so the slack ``margin - t`` moves by at most ``2 |h_j| max_o |D[j, o]|_inf + |t' - t|``:
    pairs ``(x, j)`` whose slack is farther from 0 cannot change status, and only the
    others are enumerated over the outcomes.

    Parameters
    ----------
    H : ndarray of shape (T, J)
        Influence of the J candidate rows on T evaluation points.
    S : ndarray of shape (R, T, K)
        Scores of the evaluation points in R scenarios.
    sigma2 : ndarray of shape (T,)
        ``sum_i h_i^2 v_i`` (the same in every scenario).
    D : ndarray of shape (J, n_out, K)
        Change of each candidate's nominal row per outcome.
    dv : ndarray of shape (J,)
        Change of each candidate's variance weight.
    P : ndarray of shape (J, n_out)
        Probability of each outcome.
    log_ratio : float
        ``log((K - 1) / delta)``.
    block : int, default=2**21
        Entries per enumeration block (memory).

    Returns
    -------
    gain : ndarray of shape (J,)
        Expected number of newly certified minus lost points, mean over scenarios.
    slack_gain : ndarray of shape (J,)
        Expected change of the slack of the uncertified points, to first order (ties).
    """
    R, T, K = S.shape
    J, n_out, _ = D.shape
    t = np.sqrt(2.0 * sigma2 * log_ratio)
    slack = _margin(S) - t[None, :]  # (R, T)
    cert = slack > 0
    new_t = np.sqrt(2.0 * np.maximum(sigma2[:, None] + H**2 * dv[None, :], 0.0) * log_ratio)  # (T, J)
    dt = new_t - t[:, None]
    reach = (2.0 * np.abs(H) * np.abs(D).max(axis=(1, 2))[None, :] + np.abs(dt)) * (1 + 1e-9) + 1e-12
    r_idx, t_idx, j_idx = np.nonzero(np.abs(slack)[:, :, None] <= reach[None, :, :])
    gain = np.zeros(J)
    step = max(1, block // (n_out * K))
    for s in range(0, len(j_idx), step):
        r, x, j = r_idx[s:s + step], t_idx[s:s + step], j_idx[s:s + step]
        moved = S[r, x][:, None, :] + H[x, j][:, None, None] * D[j]
        expect = np.sum(P[j] * (_margin(moved) > new_t[x, j][:, None]), axis=1)
        gain += np.bincount(j, weights=expect - cert[r, x], minlength=J)
    order = np.argsort(-S, axis=2, kind="stable")
    top, second = order[..., 0], order[..., 1]
    d_mean = np.einsum("jo,jok->jk", P, D)  # expected change of each row
    slack_gain = np.zeros(J)
    for r in range(R):
        lin = H * (d_mean[:, top[r]] - d_mean[:, second[r]]).T - dt  # (T, J)
        slack_gain += np.where(cert[r][:, None], 0.0, lin).sum(axis=0)
    return gain / R, slack_gain / R


def _gains(G, Fc, cand, S, sigma2, D, dv, P, log_ratio, chunk_size, c=None):
    """:func:`_expected_gain` of the rows ``cand`` over every evaluation point, in chunks.

    ``c``: the influence offsets of :func:`_influence_offsets` (None: ``1/n``).
    """
    n = Fc.shape[0]
    gain, slack_gain = np.zeros(len(cand)), np.zeros(len(cand))
    Fc_c, D_c, dv_c, P_c = Fc[cand], D[cand], dv[cand], P[cand]
    c_c = _offset(c, n, cand)
    for start in range(0, G.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        g, sg = _expected_gain(G[sl] @ Fc_c.T + c_c, S[:, sl], sigma2[sl], D_c, dv_c, P_c, log_ratio)
        gain += g
        slack_gain += sg
    return gain, slack_gain


def _best_first(gain, slack_gain, index):
    """Positions sorted by gain, then slack gain, then index (all deterministic)."""
    return np.lexsort((index, -slack_gain, -gain))


def _greedy(G, Fc, S, sigma2, D, dv, P, log_ratio, n_pick, block_size, pool, n_scenarios, rng, chunk_size,
            c=None, exclude=None):
    """Block-greedy order of the first ``n_pick`` rows, and every row's last computed gain.

    After each block the ``n_scenarios`` copies of the evaluation scores take one draw of
    each picked row's new votes (from ``P``), and the ``pool`` best remaining rows (by
    their last gain) are re-scored against those scenarios. ``c``: the influence offsets
    of :func:`_influence_offsets` (None: ``1/n``).
    """
    n = Fc.shape[0]
    all_rows = np.arange(n)
    gain, slack_gain = _gains(G, Fc, all_rows, S[None], sigma2, D, dv, P, log_ratio, chunk_size, c)
    scen = np.repeat(S[None], n_scenarios, axis=0)
    sigma2 = sigma2.copy()
    picked = np.zeros(n, dtype=bool) if exclude is None else exclude.copy()  # held rows are never picked
    order, at_pick = [], []
    cum = np.cumsum(P, axis=1)
    while len(order) < n_pick:
        free = np.flatnonzero(~picked)
        ranked = free[_best_first(gain[free], slack_gain[free], free)]
        chosen = ranked[:min(block_size, n_pick - len(order))]
        order.extend(chosen.tolist())
        at_pick.extend(gain[chosen].tolist())
        picked[chosen] = True
        if len(order) >= n_pick:
            break
        H_b = G @ Fc[chosen].T + _offset(c, n, chosen)  # (T, b)
        u = rng.random_sample((n_scenarios, len(chosen)))
        outcome = np.minimum((u[:, :, None] > cum[chosen][None]).sum(axis=2), P.shape[1] - 1)  # (R, b)
        scen += np.einsum("tb,rbk->rtk", H_b, D[chosen[None, :], outcome])
        sigma2 += (H_b**2) @ dv[chosen]
        rescore = ranked[len(chosen):len(chosen) + pool]
        gain[rescore], slack_gain[rescore] = _gains(G, Fc, rescore, scen, sigma2, D, dv, P, log_ratio, chunk_size,
                                                    c)
    return np.asarray(order, dtype=np.int64), np.asarray(at_pick), gain, slack_gain


def _slack(S, sigma2, log_ratio):
    """Top-2 classes and certification slack ``margin - t`` (C14) of every point.

    Returns
    -------
    top, second : ndarrays of int of shape (T,)
    slack : ndarray of shape (T,)
    t : ndarray of shape (T,)
    """
    order = np.argsort(-S, axis=1, kind="stable")
    top, second = order[:, 0], order[:, 1]
    rows = np.arange(len(S))
    t = np.sqrt(2.0 * sigma2 * log_ratio)
    return top, second, S[rows, top] - S[rows, second] - t, t


def _first_order_gain(G, Fc, S, sigma2, d_mean, dv, log_ratio, weight, c=None):
    """``sum_x weight(x) E[change of slack(x)]`` for new votes on each row, to first order.

    With ``h_j(x) = g_x . fc_j + c_j`` (C1: ``c_j = 1/n``; weighted, (C31): ``c_j = w_j / S``
    and ``fc_j`` scaled by ``w_j``), the expected slack change of ``x`` is
    ``h_j(x) (d_jc - d_jb) - (log_ratio / t(x)) h_j(x)^2 dv_j`` (``c``, ``b`` the top-2
    classes of ``x``, ``d_j`` the expected change of row ``j``, ``d t / d sigma^2 =
    log_ratio / t``); summed over ``x`` it is a product of small matrices, never ``T x n``.

    Parameters
    ----------
    G : ndarray of shape (T, d)
    Fc : ndarray of shape (n, d)
    S : ndarray of shape (T, K)
    sigma2 : ndarray of shape (T,)
    d_mean : ndarray of shape (n, K)
        ``E[pi'_j - pi_j]`` under the vote model.
    dv : ndarray of shape (n,)
    log_ratio : float
    weight : ndarray of shape (T,)
    c : ndarray of shape (n,) or None, default=None
        Influence offsets (:func:`_influence_offsets`; None: ``1/n``).

    Returns
    -------
    gain : ndarray of shape (n,)
    """
    n = Fc.shape[0]
    top, second, _, t = _slack(S, sigma2, log_ratio)
    rows = np.arange(len(S))
    E = np.zeros_like(S)
    E[rows, top] += weight
    E[rows, second] -= weight
    a = weight * log_ratio / t
    if c is None:
        A = Fc @ (G.T @ E) + E.sum(axis=0) / n  # A_jk = sum_x h_j(x) E_xk
        quad = (np.einsum("nd,de,ne->n", Fc, G.T @ (G * a[:, None]), Fc) + 2.0 / n * (Fc @ (G.T @ a))
                + a.sum() / n**2)  # sum_x a(x) h_j(x)^2
    else:
        A = Fc @ (G.T @ E) + np.outer(c, E.sum(axis=0))
        quad = (np.einsum("nd,de,ne->n", Fc, G.T @ (G * a[:, None]), Fc) + 2.0 * c * (Fc @ (G.T @ a))
                + c**2 * a.sum())
    return np.sum(d_mean * A, axis=1) - dv * quad


def _smoothed_weight(S, sigma2, log_ratio, bandwidth):
    """``phi(z) / (bandwidth sigma)``, ``z = slack / (bandwidth sigma)``: the density of points at the threshold."""
    from scipy.stats import norm

    _, _, slack, _ = _slack(S, sigma2, log_ratio)
    scale = bandwidth * np.sqrt(sigma2)
    return norm.pdf(slack / scale) / scale


def _greedy_smoothed(G, Fc, S, sigma2, d_mean, dv, log_ratio, bandwidth, n_pick, block_size, c=None,
                     exclude=None):
    """Block-greedy order by the first-order smoothed gain; the state moves by the picks' expected change.

    ``c``: the influence offsets of :func:`_influence_offsets` (None: ``1/n``).

    Returns
    -------
    order : ndarray of int of shape (n_pick,)
    at_pick : ndarray of shape (n_pick,)
        Gain of each pick when it was picked.
    gain, slack_gain : ndarrays of shape (n,)
        Last gains of every row (smoothed, and summed over the uncertified points).
    """
    n = Fc.shape[0]
    S, sigma2 = S.copy(), sigma2.copy()
    picked = np.zeros(n, dtype=bool) if exclude is None else exclude.copy()  # held rows are never picked
    order, at_pick = [], []
    while True:
        gain = _first_order_gain(G, Fc, S, sigma2, d_mean, dv, log_ratio,
                                 _smoothed_weight(S, sigma2, log_ratio, bandwidth), c)
        if len(order) >= n_pick:
            break
        free = np.flatnonzero(~picked)
        chosen = free[np.lexsort((free, -gain[free]))][:min(block_size, n_pick - len(order))]
        order.extend(chosen.tolist())
        at_pick.extend(gain[chosen].tolist())
        picked[chosen] = True
        H_b = G @ Fc[chosen].T + _offset(c, n, chosen)
        S += H_b @ d_mean[chosen]
        sigma2 += (H_b**2) @ dv[chosen]
    uncertified = (_slack(S, sigma2, log_ratio)[2] <= 0).astype(np.float64)
    slack_gain = _first_order_gain(G, Fc, S, sigma2, d_mean, dv, log_ratio, uncertified, c)
    return np.asarray(order, dtype=np.int64), np.asarray(at_pick), gain, slack_gain


def _vote_law(estimator, budget, vote_model):
    """``dict`` of :func:`_outcome_probs` arguments for a named vote model or an (n, K) array."""
    from scipy.special import softmax

    from ._calibration import _noise_channel, _ridge_loo_scores

    n, K = budget.pi.shape
    if not isinstance(vote_model, str):
        law = np.asarray(vote_model, dtype=np.float64)
        if law.shape != (n, K) or not np.all(np.isfinite(law)) or np.any(law < 0) \
                or not np.allclose(law.sum(axis=1), 1.0, atol=1e-9):
            raise CNATValueError(f"vote_model as an array must have shape ({n}, {K}) (one vote law per head row) "
                                 f"with non-negative rows summing to 1")
        return {"vote_law": law}
    if vote_model == "plurality":
        return {"vote_law": np.eye(K)[budget.labels]}
    loo = _ridge_loo_scores(estimator.train_features_, budget.pi, estimator.alpha_, estimator.coef_,
                            estimator.intercept_, _head_weights(estimator))
    prior = softmax(loo / estimator.temperature_, axis=1)
    if vote_model == "model":
        return {"vote_law": prior}
    channel = _noise_channel(budget.counts, prior)
    return {"posterior": _confusion_posterior(prior, budget.counts, channel), "channel": channel}


_VOTE_MODELS = ("confusion", "model", "plurality")


def suggest_relabels(estimator, X_eval, n=None, *, k=2, delta=0.05, strategy="expected", vote_model="confusion",
                     bandwidth=1.0, block_size=None, n_scenarios=8, random_state=None, assume="plurality",
                     chunk_size=64):
    """Rank training examples by the certified-coverage lift of ``k`` more votes.

    Parameters
    ----------
    estimator : CNATClassifier
        Fitted with ``head="ridge"`` (the exact engine), with or without ``sample_weight``.
        With weights ``w`` both strategies use the weighted head's influence, eq. (C31) of
        docs/certificates.md (section 9): ``h_i(x) = w_i [(x - Fbar_w)^T A_w^{-1}
        (f_i - Fbar_w) + 1/S]``, ``S = sum_i w_i``, so a row of weight 0 has no influence
        (gain 0), and the leave-one-out probabilities of the vote models are the weighted
        ones (C34).
    X_eval : array-like
        Evaluation inputs whose certified coverage should rise (e.g. unlabelled
        deployment data or a validation split).
    n : int or None, default=None
        Number of rows to return (all when None). With ``strategy="expected"`` the first
        ``n`` rows are chosen greedily (batch-aware); when None every row is ranked by its
        own expected gain (no re-scoring).
    k : int, default=2
        Extra votes bought per relabelled example.
    delta : float, default=0.05
        Failure probability of tier "stochastic", whose coverage is ranked.
    strategy : {"expected", "assumed"}, default="expected"
        ``"expected"``: the expected change of the number of certified evaluation points
        when the ``k`` new votes follow ``vote_model``, computed exactly by enumerating the
        ``C(K + k - 1, k)`` outcomes of the votes (pairs of a row and a point whose
        certification slack is out of reach of any outcome are skipped, exactly), and
        chosen greedily in blocks of ``block_size``. ``"assumed"``: the former
        single-example ranking with the votes fixed by ``assume``.
    vote_model : {"confusion", "model", "plurality"} or array-like of shape (n_head, K), \
default="confusion"
        Law of the new votes (``strategy="expected"``). ``"model"``: i.i.d. with the ridge
        head's leave-one-out probabilities ``softmax(loo_scores / temperature_)`` (never fitted
        on the row's own votes). ``"confusion"``: a latent true class with posterior
        ``prior_j prod_a N[a, j]^counts_a`` (prior: those leave-one-out probabilities;
        ``N``: cleanlab's confident-joint noise matrix of the annotators), and new votes
        i.i.d. ``N[:, j]`` given it (so the new votes of a row are correlated).
        ``"plurality"``: every new vote equals the current plurality. An array gives each
        head row's vote law (i.i.d. votes).
    bandwidth : float or None, default=1.0
        ``None``: the exact expected change of the number of certified points (a point
        counts when its slack crosses 0). A float ``beta``: the expected change of the
        smoothed coverage ``sum_x Phi(slack(x) / (beta sigma(x)))`` to first order in the
        new votes, ``sum_x phi(z_x) / (beta sigma(x)) E[change of slack(x)]`` (exact in
        the expectation over the votes, which enters linearly): a pick then counts for every
        point near the threshold in proportion to how far it moves it, which is what a
        batch of many small moves adds up to. ``sigma(x)`` is the standard deviation of
        Theorem 4 (C12). The default was chosen on CIFAR-10N by coverage on held-out
        selection points (docs/benchmarks/relabel_cifar10n.md).
    block_size : int or None, default=None
        Picks between re-scorings (``None``: ``ceil(n / 50)``). ``block_size >= n`` ranks
        by the single-example gains.
    n_scenarios : int, default=8
        ``bandwidth=None`` only: seeded draws of the picked rows' votes against which the
        later candidates are re-scored (the first block is exact). With a bandwidth the
        state moves by the picks' expected change (the gain is first order).
    random_state : int, RandomState or None, default=None
        Seeds the scenario draws.
    assume : {"plurality", "model"}, default="plurality"
        What the extra votes are assumed to say (``strategy="assumed"`` only).
        ``"plurality"``: they agree with the example's current plurality (only the
        variance term shrinks). ``"model"``: the counts become the expected counts under
        the leave-one-out probabilities.
    chunk_size : int, default=64
        Evaluation points per chunk (memory ``chunk_size * n_train * K`` floats).

    Returns
    -------
    ranking : pandas.DataFrame
        One row per training example the head was fitted on (every row, or the head
        rows of ``feature_split``), best first, with columns ``index`` (row in the
        training set), ``coverage_gain`` (change of coverage on ``X_eval``; for
        ``"expected"``: its expectation, or that of the smoothed coverage with a
        ``bandwidth``, per evaluation point, marginal to the rows above it when picked
        greedily), ``slack_gain`` (breaks ties), ``n_votes``, ``plurality`` (class
        label) and ``disagreement``; ``"assumed"`` adds ``newly_certified`` and ``lost``.

    Notes
    -----
    With a one-hot nominal (``pi="onehot"``) new votes change the nominal only when they
    change the plurality, and never the per-example Hoeffding range of Theorem 4: with
    ``vote_model="plurality"`` (or ``assume="plurality"``) every gain is zero. Use
    ``pi="votes"``. With ``bandwidth=None`` the greedy re-scores the ``4 * block_size``
    best remaining rows after each block (lazy greedy: the others keep their last gain);
    with a bandwidth every row is re-scored.

    Examples
    --------
    >>> from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer
    >>> from sklearn_cnat.datasets import load_digits_votes
    >>> from sklearn_cnat.relabel import suggest_relabels
    >>> X, votes = load_digits_votes(return_X_y=True)
    >>> clf = CNATClassifier(head="ridge", alpha=10.0, budget=NoiseBudgetTransformer(pi="votes"))
    >>> clf = clf.fit(X[:600], votes[:600])
    >>> suggest_relabels(clf, X[600:900], n=5, random_state=0).shape[0]
    5
    """
    import pandas as pd
    from sklearn.utils import check_random_state

    from .certificates._ridge import _stochastic_mode

    if getattr(estimator, "head", None) != "ridge" or not hasattr(estimator, "train_features_"):
        raise CertificationError("suggest_relabels needs a fitted CNATClassifier(head='ridge') "
                                 "(the exact certificate engine)")
    if not (isinstance(k, (int, np.integer)) and k >= 1):
        raise CNATValueError(f"k must be a positive integer, got {k!r}")
    if not 0 < delta < 1:
        raise CNATValueError(f"delta must be in (0, 1), got {delta!r}")
    if strategy not in ("expected", "assumed"):
        raise CNATValueError(f"strategy must be 'expected' or 'assumed', got {strategy!r}")
    if assume not in ("plurality", "model"):
        raise CNATValueError(f"assume must be 'plurality' or 'model', got {assume!r}")
    if isinstance(vote_model, str) and vote_model not in _VOTE_MODELS:
        raise CNATValueError(f"vote_model must be one of {_VOTE_MODELS} or an (n, K) array, got {vote_model!r}")
    if n is not None and not (isinstance(n, (int, np.integer)) and n >= 1):
        raise CNATValueError(f"n must be a positive integer or None, got {n!r}")
    if block_size is not None and not (isinstance(block_size, (int, np.integer)) and block_size >= 1):
        raise CNATValueError(f"block_size must be a positive integer or None, got {block_size!r}")
    if bandwidth is not None and not (isinstance(bandwidth, (int, float, np.number)) and 0 < bandwidth < np.inf):
        raise CNATValueError(f"bandwidth must be a positive float or None, got {bandwidth!r}")
    if not (isinstance(n_scenarios, (int, np.integer)) and n_scenarios >= 1):
        raise CNATValueError(f"n_scenarios must be a positive integer, got {n_scenarios!r}")
    budget = _head_budget(estimator)
    pi, counts = budget.pi, budget.counts
    n_train, K = pi.shape
    kind, v, eps, _ = _stochastic_mode(pi, counts)
    # split_head="all": the backbone rows' labels are held fixed (docs/certificates.md,
    # Proposition 8.1): no variance, never ranked (new votes there would retrain the backbone)
    held = _held_head_rows(estimator, n_train)
    v = np.where(held, 0.0, v)
    plural = budget.labels
    votes = counts.sum(axis=1)
    log_ratio = math.log((K - 1) / delta)
    F_eval = estimator.feature_map(X_eval)
    if strategy == "assumed":
        frame = _assumed(estimator, F_eval, pi, counts, kind, v, eps, plural, votes, k, assume, log_ratio, chunk_size,
                         held)
    else:
        outcomes = _vote_outcomes(K, k)
        P = _outcome_probs(outcomes, **_vote_law(estimator, budget, vote_model))
        new_pi, new_v = _new_rows(counts, eps, kind, outcomes)
        D, dv = new_pi - pi[:, None, :], np.where(held, 0.0, new_v - v)
        D[held] = 0.0
        w = _head_weights(estimator)
        G, Fc = _influence_factors(estimator.train_features_, F_eval, estimator.alpha_, w)
        c = _influence_offsets(w)
        if c is None:
            S = G @ (Fc.T @ pi) + pi.mean(axis=0)  # (C1): sum_i h_i pi_i
            c_col = np.full((n_train, 1), 1.0 / n_train)
        else:
            S = G @ (Fc.T @ pi) + (w @ pi) / w.sum()  # (C31): sum_i h_i pi_i
            c_col = c[:, None]
        Y = np.concatenate([G, np.ones((len(G), 1))], axis=1)
        Z = np.concatenate([Fc, c_col], axis=1)
        sigma2 = np.einsum("td,de,te->t", Y, Z.T @ (Z * v[:, None]), Y)  # sum_i h_i^2 v_i
        n_pick = 0 if n is None else min(int(n), int(np.sum(~held)))
        block = max(1, math.ceil(n_pick / 50)) if block_size is None else int(block_size)
        if bandwidth is None:
            rng = check_random_state(random_state)
            order, at_pick, gain, slack_gain = _greedy(G, Fc, S, sigma2, D, dv, P, log_ratio, n_pick, block,
                                                       4 * block, int(n_scenarios), rng, chunk_size, c, held)
        else:
            d_mean = np.einsum("jo,jok->jk", P, D)  # E[pi'_j - pi_j], exact over the outcomes
            order, at_pick, gain, slack_gain = _greedy_smoothed(G, Fc, S, sigma2, d_mean, dv, log_ratio,
                                                                float(bandwidth), n_pick, block, c, held)
        rest = np.setdiff1d(np.flatnonzero(~held), order)
        rest = rest[_best_first(gain[rest], slack_gain[rest], rest)]
        rows = np.concatenate([order, rest])
        gain[order] = at_pick
        frame = pd.DataFrame({"index": _head_index(estimator, n_train)[rows],
                              "coverage_gain": gain[rows] / len(F_eval), "slack_gain": slack_gain[rows]})
        frame["n_votes"] = votes[rows].astype(int)
        frame["plurality"] = np.asarray(budget.classes_)[plural[rows]]
        frame["disagreement"] = 1.0 - counts[rows].max(axis=1) / votes[rows]
    return frame if n is None else frame.head(int(n)).reset_index(drop=True)


def _assumed(estimator, F_eval, pi, counts, kind, v, eps, plural, votes, k, assume, log_ratio, chunk_size, held):
    """The single-example ranking with the extra votes fixed by ``assume`` (``held`` rows left out)."""
    import pandas as pd

    from .certificates._ridge import _ridge_influence

    n_train, K = pi.shape
    new_counts = counts + k * _expected_new_votes(estimator, assume, plural)
    if kind == "votes":
        new_pi = (1 - eps) * new_counts / (votes + k)[:, None] + eps / K
        new_v = (1 - eps) ** 2 / (votes + k)
    else:  # one-hot plurality nominal: only a change of plurality moves it (Theorem 4's v_i is fixed)
        new_pi, new_v = (1 - eps) * np.eye(K)[np.argmax(new_counts, axis=1)] + eps / K, v
    delta_pi, delta_v = np.where(held[:, None], 0.0, new_pi - pi), np.where(held, 0.0, new_v - v)
    gained = np.zeros(n_train)
    lost = np.zeros(n_train)
    slack_gain = np.zeros(n_train)
    for H in _ridge_influence(estimator.train_features_, F_eval, estimator.alpha_, chunk_size=chunk_size,
                              sample_weight=_head_weights(estimator)):
        S = H @ pi
        sigma2 = (H**2) @ v
        g, lo, sg = _relabel_effect(H, S, sigma2, delta_pi, delta_v, log_ratio)
        gained += g
        lost += lo
        slack_gain += sg
    budget = _head_budget(estimator)
    frame = pd.DataFrame({
        "index": _head_index(estimator, n_train),
        "coverage_gain": (gained - lost) / len(F_eval),
        "newly_certified": gained.astype(int),
        "lost": lost.astype(int),
        "slack_gain": slack_gain,
        "n_votes": votes.astype(int),
        "plurality": np.asarray(budget.classes_)[plural],
        "disagreement": 1.0 - counts.max(axis=1) / votes,
    })
    frame = frame[~held]
    return frame.sort_values(["coverage_gain", "slack_gain", "index"], ascending=[False, False, True],
                             kind="mergesort").reset_index(drop=True)
