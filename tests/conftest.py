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
def load_benchmark():
    """A callable: ``load_benchmark("cifar10n.py", "cifar10n_benchmark")`` imports a script of benchmarks/."""
    import importlib.util

    def load(filename, name):
        script = Path(__file__).resolve().parents[1] / "benchmarks" / filename
        spec = importlib.util.spec_from_file_location(name, script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (tiny tensors: thread start-up dominates on a busy machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cifar10n_dir():
    if not (CIFAR_DIR / "cifar10.npz").exists():
        pytest.skip(f"CIFAR-10N data not found at {CIFAR_DIR}")
    return CIFAR_DIR
