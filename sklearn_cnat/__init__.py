"""sklearn-cnat: robust training on noisy labels and certified noise robustness.

Train classifiers on labels that humans got wrong or disagreed on (CNAT:
label-space distributionally robust training) and certify which predictions
would not change had those training labels been different within stated,
per-example limits (CNR certificates). See ``docs/`` for the user guide and
``docs/certificates.md`` for the statements and proofs.

Public names are imported lazily so that ``import sklearn_cnat`` stays cheap.
"""

import importlib

__version__ = "0.1.0.dev0"

_LAZY = {
    "worst_case_expectation": "sklearn_cnat.sets",
    "NoiseBudget": "sklearn_cnat.budgets",
    "NoiseBudgetTransformer": "sklearn_cnat.budgets",
    "CNATLoss": "sklearn_cnat.losses",
    "CNATClassifier": "sklearn_cnat.classifier",
    "Certificate": "sklearn_cnat.certificates",
    "PartitionAggregationClassifier": "sklearn_cnat.partition",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sklearn_cnat' has no attribute {name!r}")


def __dir__():
    return __all__
