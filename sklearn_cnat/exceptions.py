"""Exceptions raised by sklearn-cnat.

Every error the package raises on purpose derives from :class:`CNATError`;
the not-fitted error also derives from scikit-learn's ``NotFittedError`` so
that scikit-learn's tooling (``check_is_fitted``, common checks) keeps working.
"""

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

__all__ = ["CNATError", "NotFittedError", "CertificationError"]


class CNATError(Exception):
    """Base class of the exceptions raised by sklearn-cnat."""


class NotFittedError(CNATError, _SklearnNotFittedError):
    """Raised when a method needing a fitted estimator is called before ``fit``."""


class CertificationError(CNATError, ValueError):
    """Raised when a certificate cannot be issued soundly.

    For instance a tier that an engine cannot certify, or a model whose
    training does not satisfy the assumptions of the engine's proof. The
    package never falls back silently to a weaker statement.
    """
