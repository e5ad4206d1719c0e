"""Metrics and scorers for vote-count ground truth and CNR certificates.

Metric functions take ``y_true`` as 1-D labels or as a vote-count matrix of
shape ``(n_samples, n_classes)``. Scorers are resolved by :func:`get_scorer`,
which knows sklearn-cnat's names and falls back to scikit-learn's; the same scorers
are public objects (``plurality_accuracy_scorer``, ``cnr_coverage_scorer``, ...) for
scikit-learn's own ``cross_val_score`` and ``GridSearchCV``. See ``docs/metrics.md``.
"""

from ._classification import (
    ambiguity_accuracy_score,
    brier_score,
    certified_accuracy_score,
    cnr_coverage_score,
    expected_calibration_error,
    log_loss_votes,
    nll_score,
    plausible_label_map,
    plurality_accuracy_score,
)
from ._scorer import (
    ambiguity_accuracy_scorer,
    certified_accuracy_scorer,
    cnr_coverage_scorer,
    get_scorer,
    get_scorer_names,
    make_cnr_scorer,
    neg_brier_votes_scorer,
    neg_ece_scorer,
    neg_log_loss_votes_scorer,
    plausible_label_map_scorer,
    plurality_accuracy_scorer,
)

__all__ = [
    "ambiguity_accuracy_score",
    "ambiguity_accuracy_scorer",
    "certified_accuracy_scorer",
    "cnr_coverage_scorer",
    "neg_brier_votes_scorer",
    "neg_ece_scorer",
    "neg_log_loss_votes_scorer",
    "plausible_label_map_scorer",
    "plurality_accuracy_scorer",
    "brier_score",
    "certified_accuracy_score",
    "cnr_coverage_score",
    "expected_calibration_error",
    "get_scorer",
    "get_scorer_names",
    "log_loss_votes",
    "make_cnr_scorer",
    "nll_score",
    "plausible_label_map",
    "plurality_accuracy_score",
]
