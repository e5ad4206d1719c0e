"""Relabeling guidance: which training examples deserve extra votes.

:func:`suggest_relabels` ranks training examples by how much buying ``k`` more
votes for them would raise certified coverage (tier "stochastic") on an
evaluation set, for the exact ridge engine. For each candidate ``i`` it
recomputes the certificate of every evaluation point exactly as if example
``i`` had ``k`` more votes agreeing with its current plurality: the scores move
by ``h_i(x) (pi'_i - pi_i)`` (eq. (C1) of docs/certificates.md) and the
Hoeffding variance ``sigma^2`` of (C12) by ``h_i(x)^2 (v'_i - v_i)``. The
ranking is by the single-example effect (not a joint optimisation over the
chosen set), and ignores the float rounding allowance (C15), which is many
orders of magnitude below the margins.
"""

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


def suggest_relabels(estimator, X_eval, n=None, *, k=2, delta=0.05, assume="plurality", chunk_size=64):
    """Rank training examples by the certified-coverage lift of ``k`` more votes.

    Parameters
    ----------
    estimator : CNATClassifier
        Fitted with ``head="ridge"`` (the exact engine).
    X_eval : array-like
        Evaluation inputs whose certified coverage should rise (e.g. unlabelled
        deployment data or a validation split).
    n : int or None, default=None
        Number of rows to return (all when None).
    k : int, default=2
        Extra votes assumed per relabelled example.
    assume : {"plurality", "model"}, default="plurality"
        What the extra votes are assumed to say. ``"plurality"``: they agree with the
        example's current plurality (only the variance term of the certificate
        shrinks). ``"model"``: they follow the model's own leave-one-out probability
        for the example (``softmax(loo_scores / temperature_)``, never fitted on that
        example's label), so examples whose label the model doubts are expected to
        move towards the model's class; the counts used are then the expected counts.
    delta : float, default=0.05
        Failure probability of tier "stochastic".
    chunk_size : int, default=64
        Evaluation points per chunk (memory ``chunk_size * n_train * K`` floats).

    Returns
    -------
    ranking : pandas.DataFrame
        One row per training example the head was fitted on (every row, or the head
        rows of ``feature_split``), best first, with columns ``index`` (row in the
        training set), ``coverage_gain`` (net change of coverage on ``X_eval``),
        ``newly_certified``, ``lost``, ``slack_gain`` (summed improvement of the
        certification slack of uncertified points, which breaks ties),
        ``n_votes``, ``plurality`` (class label) and ``disagreement``.

    Notes
    -----
    With a one-hot nominal (``pi="onehot"``) extra votes change the nominal only
    when they change the plurality, and never the per-example Hoeffding range of
    Theorem 4: with ``assume="plurality"`` every gain is zero. Use ``pi="votes"``.
    """
    import pandas as pd

    from .certificates._ridge import _ridge_influence, _stochastic_mode

    if getattr(estimator, "head", None) != "ridge" or not hasattr(estimator, "train_features_"):
        raise CertificationError("suggest_relabels needs a fitted CNATClassifier(head='ridge') "
                                 "(the exact certificate engine)")
    if not (isinstance(k, (int, np.integer)) and k >= 1):
        raise CNATValueError(f"k must be a positive integer, got {k!r}")
    if not 0 < delta < 1:
        raise CNATValueError(f"delta must be in (0, 1), got {delta!r}")
    if assume not in ("plurality", "model"):
        raise CNATValueError(f"assume must be 'plurality' or 'model', got {assume!r}")
    budget = _head_budget(estimator)
    pi, counts = budget.pi, budget.counts
    n_train, K = pi.shape
    kind, v, eps, _ = _stochastic_mode(pi, counts)
    plural = budget.labels
    votes = counts.sum(axis=1)
    new_counts = counts + k * _expected_new_votes(estimator, assume, plural)
    if kind == "votes":
        new_pi = (1 - eps) * new_counts / (votes + k)[:, None] + eps / K
        new_v = (1 - eps) ** 2 / (votes + k)
    else:  # one-hot plurality nominal: only a change of plurality moves it (Theorem 4's v_i is fixed)
        new_pi, new_v = (1 - eps) * np.eye(K)[np.argmax(new_counts, axis=1)] + eps / K, v
    delta_pi, delta_v = new_pi - pi, new_v - v

    F_eval = estimator.feature_map(X_eval)
    log_ratio = math.log((K - 1) / delta)
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
    n_eval = len(F_eval)
    frame = pd.DataFrame({
        "index": _head_index(estimator, n_train),
        "coverage_gain": (gained - lost) / n_eval,
        "newly_certified": gained.astype(int),
        "lost": lost.astype(int),
        "slack_gain": slack_gain,
        "n_votes": votes.astype(int),
        "plurality": np.asarray(budget.classes_)[plural],
        "disagreement": 1.0 - counts.max(axis=1) / votes,
    })
    frame = frame.sort_values(["coverage_gain", "slack_gain", "index"], ascending=[False, False, True],
                              kind="mergesort").reset_index(drop=True)
    return frame if n is None else frame.head(int(n))
