"""CNR certificates: which predictions provably survive changes of the training labels.

Statements and proofs: ``docs/certificates.md``.
"""

from ._certificate import Certificate
from ._ridge import certify_ridge

__all__ = ["Certificate", "certify_ridge"]
