"""Metrics and scorers for vote-count ground truth and CNR certificates.

Metric functions take ``y_true`` as 1-D labels or as a vote-count matrix of
shape ``(n_samples, n_classes)``. Scorers are resolved by :func:`get_scorer`,
which knows sklearn-cnat's names and falls back to scikit-learn's. See
``docs/metrics.md``.
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
from ._scorer import get_scorer, get_scorer_names, make_cnr_scorer

__all__ = [
    "ambiguity_accuracy_score",
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
