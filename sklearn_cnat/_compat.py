"""Compatibility layer: the only place that imports scikit-learn's private helpers.

scikit-learn does not promise stability for these names; when a release moves one,
fix the import here and nowhere else. Keep this module additive: one block per user.
"""

# Declarative parameter validation (used by the metric functions and scorers).
from sklearn.utils._param_validation import (  # noqa: F401
    HasMethods,
    Interval,
    InvalidParameterError,
    StrOptions,
    validate_params,
)

# Step naming of make_pipeline (used by sklearn_cnat.pipeline). That module also overrides
# Pipeline._fit(X, y, ...), the hook through which every Pipeline fit method fits the steps
# before the last (stable since scikit-learn 0.20); a release that renames it breaks there.
from sklearn.pipeline import _name_estimators  # noqa: F401,E402

# Validation of fit's sample_weight (used by sklearn_cnat.classifier and the baselines).
from sklearn.utils.validation import _check_sample_weight  # noqa: F401,E402
