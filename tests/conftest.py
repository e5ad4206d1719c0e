import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

CIFAR_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10n"


@pytest.fixture(autouse=True)
def _seed_everything():
    import torch

    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def close_figures():
    yield
    try:
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    plt.close("all")


@pytest.fixture(scope="session")
def cifar10n_dir():
    if not (CIFAR_DIR / "cifar10.npz").exists():
        pytest.skip(f"CIFAR-10N data not found at {CIFAR_DIR}")
    return CIFAR_DIR
