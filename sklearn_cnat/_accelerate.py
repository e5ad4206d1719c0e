"""Training through Hugging Face accelerate (skorch's ``AccelerateMixin``).

Kept in its own module because importing ``skorch.hf`` pulls in accelerate,
which takes seconds; ``CNATClassifier`` imports it only when ``accelerator``
is set.
"""

from skorch.hf import AccelerateMixin

from .classifier import _CNATNet


class _AcceleratedCNATNet(AccelerateMixin, _CNATNet):
    """:class:`~sklearn_cnat.classifier._CNATNet` trained through an ``accelerate.Accelerator``."""
