"""CNATClassifier on real CIFAR-10N human labels (skipped when ../shared/data/cifar10n is absent)."""

import numpy as np
import pytest

from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer
from sklearn_cnat.models import SmallCNN

pytestmark = [pytest.mark.cifar, pytest.mark.slow]


def test_small_cnn_on_2000_cifar10n_images_with_three_votes(cifar10n_dir):
    d = np.load(cifar10n_dir / "cifar10.npz")
    lab = np.load(cifar10n_dir / "cifar10n_labels.npz")
    rng = np.random.RandomState(0)
    idx = rng.choice(50000, 2000, replace=False)
    votes = sum(np.eye(10, dtype=int)[lab[f"random_label{k}"][idx]] for k in (1, 2, 3))
    x_train = d["x_train"][idx]  # NHWC uint8
    test_idx = np.arange(0, 10000, 10)  # test arrays are grouped by class: 100 per class
    x_test, y_test = d["x_test"][test_idx], d["y_test"][test_idx]

    clf = CNATClassifier(
        module=SmallCNN, module_kwargs={"width": 16},
        budget=NoiseBudgetTransformer(pi="votes", mapping="flat", radius=0.1),
        max_epochs=6, lr=2e-3, batch_size=64, random_state=0,
    )
    clf.fit(x_train, votes)
    acc = clf.score(x_test, y_test)
    assert acc > 0.35, acc  # chance is 0.10; measured 0.437 (0.395 without BatchNorm recalibration)
