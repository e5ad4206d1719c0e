"""scikit-learn's common estimator checks on every estimator of the package.

Skipped checks and why (also in docs): see ``_EXPECTED_FAILED``.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_cnat import CNATClassifier

# CNATClassifier's softmax head is trained by mini-batch gradient descent with the
# CNAT loss; its y is label *evidence* whose classes are read from the data.
_EXPECTED_FAILED = {
    "check_sample_weight_equivalence_on_dense_data": "fit has no sample_weight",
    "check_sample_weights_invariance": "fit has no sample_weight",
    "check_classifiers_one_label_sample_weights": "fit has no sample_weight",
}


def _expected_failed_checks(estimator):
    return _EXPECTED_FAILED


@parametrize_with_checks(
    [
        CNATClassifier(head="ridge"),
        CNATClassifier(max_epochs=20, lr=0.05, batch_size=32, random_state=0),
    ],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
