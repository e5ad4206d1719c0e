"""CNR certificates: which predictions provably survive changes of the training labels.

Statements and proofs: ``docs/certificates.md``.
"""

import functools

from ._certificate import Certificate, _check_nominal
from ._ridge import certify_ridge as _certify_ridge

__all__ = ["Certificate", "certify_ridge"]


@functools.wraps(_certify_ridge)
def certify_ridge(F_train, budget, F_test, **kwargs):
    # Tiers the budget's provenance rules out (an aggregator's pi and tier "stochastic")
    # are refused before the engine runs; the engine is certificates._ridge.certify_ridge.
    _check_nominal(budget, kwargs.get("tier", "stochastic"))
    return _certify_ridge(F_train, budget, F_test, **kwargs)
