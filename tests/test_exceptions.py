"""Errors the package raises on purpose derive from CNATError and keep the builtin type users expect."""

import numpy as np
import pytest

from sklearn_cnat import CNATClassifier
from sklearn_cnat.budgets import NoiseBudgetTransformer
from sklearn_cnat.exceptions import CNATError, CNATTypeError, CNATValueError, NoiseBudgetError
from sklearn_cnat.sets import worst_case_expectation


def test_hierarchy():
    assert issubclass(CNATValueError, ValueError) and issubclass(CNATValueError, CNATError)
    assert issubclass(CNATTypeError, TypeError) and issubclass(CNATTypeError, CNATError)
    assert issubclass(NoiseBudgetError, CNATValueError)
    from sklearn_cnat import budgets

    assert budgets.NoiseBudgetError is NoiseBudgetError  # still importable where it used to live


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: NoiseBudgetTransformer().fit_transform(np.array([[1.0, -2.0, 0.0], [0.0, 2.0, 1.0]])), "negative"),
        (lambda: worst_case_expectation(np.ones((1, 3)), np.ones((1, 3)) / 3, r=-0.1), "r"),
        (lambda: worst_case_expectation(np.ones(3), np.ones(3) / 3), "2-D"),
        (lambda: CNATClassifier(head="ridge").fit(np.zeros((4, 2)), np.ones((3, 2), dtype=int)), "4|3"),
        (lambda: CNATClassifier(head="nope").fit(np.zeros((4, 2)), [0, 1, 0, 1]), "head"),
    ],
)
def test_bad_input_raises_cnat_errors(call, match):
    with pytest.raises(CNATError, match=match):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: NoiseBudgetTransformer(radius=3.0).fit_transform(np.eye(3, dtype=int)),
    ],
)
def test_bad_parameters_raise_sklearns_invalid_parameter_error(call):
    # hyper-parameters are validated by scikit-learn's own machinery, as in every sklearn estimator
    from sklearn.utils._param_validation import InvalidParameterError

    with pytest.raises(InvalidParameterError):
        call()
