"""scikit-learn's common estimator checks on every estimator of the package.

Skipped checks and why (also in docs): see ``_EXPECTED_FAILED``.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_cnat import CNATClassifier

# Every applicable check passes for both heads, the sample-weight checks included
# (fit(X, y, sample_weight=...): integer weights equal repeated rows for the ridge head,
# its leave-one-out temperature reading weights as frequencies, docs/certificates.md,
# section 9); nothing is marked as an expected failure. Configured instances: the default 10 epochs at lr=1e-3 are too
# few for check_classifiers_train's accuracy threshold on its tiny blobs.
_EXPECTED_FAILED = {}


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
