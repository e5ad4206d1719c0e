"""Ridge ``alpha`` chosen by exact leave-one-out agreement with the training labels.

Used by ``CNATClassifier(alpha=[...])`` (as ``RidgeCV(alphas=...)`` does for squared error).
The certificates are statements about the learner at the chosen ``alpha_`` held fixed: a
label change could change the choice itself, which they do not cover (docs/certificates.md,
section 6).
"""

import numpy as np

__all__ = []


def _loo_alpha(F, pi, grid):
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
        coef, intercept = _ridge_fit(F, pi, a)
        agree = pi[rows, _ridge_loo_scores(F, pi, a, coef, intercept).argmax(1)]
        scores[a] = float(agree.mean())
        ses[a] = float(agree.std(ddof=1) / np.sqrt(len(agree))) if len(agree) > 1 else 0.0
    best = max(scores, key=scores.get)
    return max(a for a in scores if scores[a] >= scores[best] - ses[best]), scores
