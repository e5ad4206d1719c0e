"""Ridge ``alpha`` chosen by exact leave-one-out agreement with the training labels.

Used by ``CNATClassifier(alpha=[...])`` (as ``RidgeCV(alphas=...)`` does for squared error).
The certificates are statements about the learner at the chosen ``alpha_`` held fixed: a
label change could change the choice itself, which they do not cover (docs/certificates.md,
section 6).
"""

import numpy as np

__all__ = []


def _weighted_mean_se(values, sample_weight):
    """Mean and standard error of ``values`` (n,); weighted, the weights as frequencies
    (scikit-learn's convention, so integer weights equal repeated rows): weighted mean,
    ``var = sum_i w_i (v_i - mean)^2 / (S - 1)``, ``se = sqrt(var / S)``, ``S = sum_i w_i``."""
    n = len(values)
    if sample_weight is None:
        return float(values.mean()), float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    w = np.asarray(sample_weight, dtype=np.float64)
    mean = float(np.average(values, weights=w))
    total = float(w.sum())
    if total <= 1.0:
        return mean, 0.0
    var = float(np.sum(w * (values - mean) ** 2)) / (total - 1.0)
    return mean, float(np.sqrt(var / total))


def _loo_alpha(F, pi, grid, sample_weight=None):
    """One-standard-error choice of ``alpha`` by exact leave-one-out agreement.

    Score of ``alpha``: ``mean_i pi_i[argmax s_{-i}(f_i)]``, the leave-one-out agreement
    with the nominal labels (accuracy against a one-hot label, expected agreement with a
    random vote for a vote mean). The *largest* ``alpha`` whose score is within one standard
    error ``sd_i / sqrt(n)`` of the best wins (Hastie, Tibshirani & Friedman, ESL 7.10):
    larger ``alpha`` means larger certified margins per unit of influence.

    Parameters
    ----------
    F : ndarray of shape (n_samples, n_features)
    pi : ndarray of shape (n_samples, n_classes)
    grid : sequence of float > 0
    sample_weight : ndarray of shape (n_samples,) or None
        Row weights as frequencies: weighted ridge, leave-one-out of one unit of weight
        (``_ridge_loo_scores``), weighted agreement and standard error (docs/certificates.md,
        section 9): integer weights choose as repeated rows do.

    Returns
    -------
    alpha : float
    scores : dict of float to float
        Leave-one-out agreement per candidate.
    """
    from ._calibration import _ridge_loo_scores
    from .certificates._ridge import _ridge_fit

    F = np.asarray(F, dtype=np.float64)
    rows = np.arange(len(pi))
    scores, ses = {}, {}
    for a in sorted(float(a) for a in grid):
        coef, intercept = _ridge_fit(F, pi, a, sample_weight)
        agree = pi[rows, _ridge_loo_scores(F, pi, a, coef, intercept, sample_weight).argmax(1)]
        scores[a], ses[a] = _weighted_mean_se(agree, sample_weight)
    best = max(scores, key=scores.get)
    return max(a for a in scores if scores[a] >= scores[best] - ses[best]), scores
