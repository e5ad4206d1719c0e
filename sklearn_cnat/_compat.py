"""Compatibility layer: the only place that imports scikit-learn's private helpers.

scikit-learn does not promise stability for these names; when a release moves one,
fix the import here and nowhere else. Keep this module additive: one block per user.
"""

# Declarative parameter validation (used by the metric functions and scorers).
from sklearn.utils._param_validation import (  # noqa: F401
    Interval,
    InvalidParameterError,
    StrOptions,
    validate_params,
)
