"""Probability calibration of the ridge head by leave-one-out temperature scaling.

The ridge head's scores are linear in the labels and sum to one, but they are
not probabilities. ``CNATClassifier(head="ridge")`` reports
``softmax(scores / T)``, where the temperature ``T`` minimises the
cross-entropy between the nominal labels ``pi_i`` and the *leave-one-out*
scores of the training examples. Leave-one-out scores of a ridge fit are exact
and cheap: for penalised least squares with a fixed penalty (the intercept
unpenalised), removing example ``i`` gives

    s_{-i}(f_i) = (s(f_i) - H_ii q_i) / (1 - H_ii),
    H_ii = 1/n + (f_i - Fbar)^T A^{-1} (f_i - Fbar)

(Sherman-Morrison; ``A`` as in docs/certificates.md (C0)). Temperature scaling
keeps the arg-max, so predictions and certificates do not change.

``calibration="noise_corrected"`` fits the temperature through the label-noise
channel instead (forward correction, Patrini et al. 2017, applied to temperature
scaling): with ``N[a, b] = P(observed label a | true class b)`` estimated by
cleanlab's confident joint from the leave-one-out probabilities and the votes,
``T`` maximises ``sum_i sum_a counts_ia log (N softmax(s_{-i} / T))_a``. Plain
temperature scaling against noisy labels or vote histograms fits
``P(annotator label | x)``, which is flatter than ``P(true class | x)``, so it is
under-confident against clean labels. The correction is only as good as the
estimated channel: on weak features it can make calibration worse
(docs/benchmarks.md).
"""

import numpy as np
import scipy.linalg
import scipy.optimize
from scipy.special import log_softmax

__all__ = []


def _ridge_loo_scores(F, Q, alpha, coef, intercept, sample_weight=None):
    """Exact leave-one-out ridge scores of the training points, shape (n, K).

    With ``sample_weight`` (weights as frequencies, scikit-learn's convention), one unit of
    row ``i``'s weight is left out, ``omega_i = min(w_i, 1)``: by Sherman-Morrison
    ``s_{-i}(f_i) = (s(f_i) - omega_i g_i q_i) / (1 - omega_i g_i)`` with
    ``g_i = 1/S + fc_i^T A_w^{-1} fc_i`` and the weighted centring (docs/certificates.md,
    section 9). Integer weights give exactly the leave-one-out scores of repeated rows; a
    zero-weight row keeps its in-sample score.
    """
    F = np.asarray(F, dtype=np.float64)
    n = F.shape[0]
    if sample_weight is None:
        Fc = F - F.mean(axis=0)
        A = Fc.T @ Fc
    else:
        w = np.asarray(sample_weight, dtype=np.float64)
        Fc = F - (w @ F) / w.sum()
        A = (Fc * w[:, None]).T @ Fc
        A = np.tril(A) + np.tril(A, -1).T
    A[np.diag_indices_from(A)] += alpha
    solved = scipy.linalg.cho_solve(scipy.linalg.cho_factor(A, lower=True), Fc.T).T  # (n, d)
    if sample_weight is None:
        h = 1.0 / n + np.einsum("ij,ij->i", solved, Fc)
    else:
        h = np.minimum(w, 1.0) * (1.0 / w.sum() + np.einsum("ij,ij->i", solved, Fc))
    scores = F @ coef + intercept
    return (scores - h[:, None] * Q) / np.maximum(1.0 - h, 1e-12)[:, None]


def _fit_temperature(scores, targets, bounds=(1e-3, 1e3), sample_weight=None):
    """Temperature minimising the mean cross-entropy of ``softmax(scores / T)`` against ``targets``
    (weighted mean with ``sample_weight``)."""
    targets = np.asarray(targets, dtype=np.float64)

    def nll(log_t):
        per_row = np.sum(targets * log_softmax(scores / np.exp(log_t), axis=1), axis=1)
        return -float(np.average(per_row, weights=sample_weight))

    return _minimise_over_log_temperature(nll, bounds)


def _minimise_over_log_temperature(nll, bounds):
    """``exp`` of the minimiser of ``nll(log T)`` over ``log T`` in ``log(bounds)`` (bounded Brent)."""
    res = scipy.optimize.minimize_scalar(nll, bounds=np.log(bounds), method="bounded",
                                         options={"xatol": 1e-6})
    return float(np.exp(res.x))


def _noise_channel(counts, pred_probs):
    """Noise channel ``N[a, b] = P(observed label a | true class b)`` (columns sum to one).

    cleanlab's confident-joint estimate from out-of-sample ``pred_probs`` (n, K) and the
    observed labels given as vote counts (n, K): each vote is one (label, pred_probs) pair.
    """
    from cleanlab.count import estimate_py_and_noise_matrices_from_probabilities

    counts = np.asarray(counts)
    rows, labels = np.nonzero(counts)
    reps = counts[rows, labels].astype(np.int64)
    rows, labels = np.repeat(rows, reps), np.repeat(labels, reps)
    _, nm, _, _ = estimate_py_and_noise_matrices_from_probabilities(labels, np.asarray(pred_probs)[rows])
    return np.asarray(nm, dtype=np.float64)


def _fit_noise_corrected_temperature(scores, counts, channel, bounds=(1e-3, 1e3)):
    """Temperature of ``P(true | x) = softmax(scores / T)`` maximising the likelihood of the
    observed votes ``counts`` (n, K) through ``channel`` (K, K); ``scores`` out-of-sample."""
    counts = np.asarray(counts, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)

    def nll(log_t):
        q = np.exp(log_softmax(scores / np.exp(log_t), axis=1)) @ np.asarray(channel).T
        return -float(np.sum(counts * np.log(np.clip(q, 1e-300, None))) / len(scores))

    return _minimise_over_log_temperature(nll, bounds)
