"""Exceptions raised by sklearn-cnat.

Every error the package raises on purpose derives from :class:`CNATError`;
the not-fitted error also derives from scikit-learn's ``NotFittedError`` so
that scikit-learn's tooling (``check_is_fitted``, common checks) keeps working.
Invalid *data* (shapes, NaN, negative counts, unknown classes, mismatched K)
raises :class:`CNATValueError` / :class:`CNATTypeError`; invalid
*hyper-parameters* are checked by scikit-learn's parameter validation and raise
its ``InvalidParameterError`` (a ``ValueError`` and ``TypeError``), exactly as
scikit-learn's own estimators do.
"""

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

__all__ = ["CNATError", "CNATValueError", "CNATTypeError", "NoiseBudgetError", "InputFileError", "NotFittedError",
           "CertificationError", "TrivialCertificateWarning"]


class CNATError(Exception):
    """Base class of the exceptions raised by sklearn-cnat."""


class CNATValueError(CNATError, ValueError):
    """Raised for an invalid value: a bad shape, NaN, a budget out of range, an unknown class.

    Also a ``ValueError``, so code written for scikit-learn's errors keeps working.
    """


class CNATTypeError(CNATError, TypeError):
    """Raised for an argument of the wrong type (also a ``TypeError``)."""


class NoiseBudgetError(CNATValueError):
    """Raised when label evidence or a noise budget is invalid (shapes, NaN, negative
    counts, radii out of range, mismatched number of classes)."""


class InputFileError(CNATValueError, OSError):
    """Raised when a file cannot be read as the input it should be: missing, empty,
    truncated, undecodable or of an unsupported format. The message names the file.

    Also an ``OSError`` (and a ``ValueError``), like ``io.UnsupportedOperation``.
    """


class NotFittedError(CNATError, _SklearnNotFittedError):
    """Raised when a method needing a fitted estimator is called before ``fit``."""


class CertificationError(CNATError, ValueError):
    """Raised when a certificate cannot be issued soundly.

    For instance a tier that an engine cannot certify, or a model whose
    training does not satisfy the assumptions of the engine's proof. The
    package never falls back silently to a weaker statement.
    """


class TrivialCertificateWarning(UserWarning):
    """Warned when a certificate is true for a trivial reason.

    For instance tier "bounded" with a KL ball around a one-hot ``pi``: that ball holds
    only the vertex itself, so the rows concerned are certified against no change at
    all, and such coverage is not comparable with l1 coverage.
    """
