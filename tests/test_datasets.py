from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import make_blobs
from sklearn.utils import Bunch

from sklearn_cnat.datasets import (
    load_cifar10n,
    load_digits_votes,
    simulate_annotators,
    votes_from_annotator_labels,
)


@pytest.fixture(scope="module")
def digits():
    return load_digits_votes(n_annotators=3, noise_rate=0.25, random_state=0)


def _quartiles(difficulty):
    return np.digitize(difficulty, np.quantile(difficulty, [0.25, 0.5, 0.75]))


def _disagreement(votes):
    return 1.0 - votes.max(axis=1) / votes.sum(axis=1)


# --------------------------------------------------------------------------- #
# simulate_annotators: the generative model
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_disagreement_concentrates_on_hard_instances(digits, seed):
    votes, det = simulate_annotators(
        digits.data, digits.target, 3, noise_rate=0.25, random_state=seed, return_details=True
    )
    q = _quartiles(det.difficulty)
    dis = _disagreement(votes)
    easy, hard = dis[q == 0].mean(), dis[q == 3].mean()
    assert hard > 2 * easy
    assert hard - easy > 0.15


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plurality_accuracy_decreases_with_difficulty(seed):
    X, y = make_blobs(n_samples=4000, centers=6, cluster_std=2.5, random_state=seed)
    votes, det = simulate_annotators(
        X, y, 5, noise_rate=0.3, random_state=seed, return_details=True
    )
    q = _quartiles(det.difficulty)
    acc = np.array([(votes.argmax(axis=1) == y)[q == k].mean() for k in range(4)])
    assert np.all(np.diff(acc) < 0.01)  # non-increasing up to noise
    assert acc[0] - acc[3] > 0.1


def test_error_probability_increases_with_difficulty(digits):
    _, det = simulate_annotators(
        digits.data, digits.target, 4, noise_rate=0.2, random_state=0, return_details=True
    )
    order = np.argsort(det.difficulty)
    p = det.error_prob[order]
    assert np.all(np.diff(p, axis=0) >= -1e-12)
    assert np.isclose(det.error_prob.mean(), 0.2 * det.annotator_skill.mean())


@pytest.mark.parametrize("noise_rate", [0.0, 0.1, 0.25, 0.35])
def test_overall_error_rate_near_noise_rate(digits, noise_rate):
    _, det = simulate_annotators(
        digits.data,
        digits.target,
        10,
        noise_rate=noise_rate,
        random_state=3,
        return_details=True,
    )
    assert np.isclose(det.annotator_skill.mean(), 1.0)
    err = (det.annotator_labels != digits.target[:, None]).mean()
    assert abs(err - noise_rate) < 0.015


def test_errors_go_mostly_to_impostors(digits):
    y = digits.target
    _, det = simulate_annotators(
        digits.data, y, 5, noise_rate=0.3, n_impostors=2, random_state=0, return_details=True
    )
    lab = det.annotator_labels
    rows, cols = np.nonzero(lab != y[:, None])
    given = lab[rows, cols]
    is_impostor = (det.impostors[y[rows]] == given[:, None]).any(axis=1)
    # 80 % of the error mass in expectation, versus 2/9 for uniform errors.
    assert is_impostor.mean() > 0.7
    assert det.confusion.shape == (5, 10, 10)
    assert np.allclose(det.confusion.sum(axis=2), 1.0)
    assert np.all(np.diagonal(det.confusion, axis1=1, axis2=2) == 0)


def test_impostors_are_nearest_class_centres():
    rng = np.random.RandomState(0)
    # Ten classes on a line, centres 0, 10, 20, ...: the neighbours are the impostors.
    y = np.repeat(np.arange(10), 30)
    X = np.c_[10.0 * y + rng.randn(300), 0.1 * rng.randn(300)]
    _, det = simulate_annotators(X, y, n_impostors=2, random_state=0, return_details=True)
    assert set(det.impostors[0]) == {1, 2}
    assert set(det.impostors[5]) == {4, 6}
    assert set(det.impostors[9]) == {8, 7}


def test_no_impostors_spreads_errors_uniformly(digits):
    _, det = simulate_annotators(
        digits.data, digits.target, 3, n_impostors=0, random_state=0, return_details=True
    )
    assert det.impostors.shape == (10, 0)
    base_mean = det.confusion.mean(axis=0)
    off = base_mean[~np.eye(10, dtype=bool)]
    assert off.max() < 4 / 9  # no class takes a dominant share


def test_seeds_reproduce_and_differ(digits):
    kw = dict(n_annotators=4, noise_rate=0.3)
    a = simulate_annotators(digits.data, digits.target, random_state=7, **kw)
    b = simulate_annotators(digits.data, digits.target, random_state=7, **kw)
    c = simulate_annotators(digits.data, digits.target, random_state=8, **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_shapes_dtypes_and_row_sums():
    X, y = make_blobs(n_samples=200, centers=4, random_state=0)
    labels_str = np.array(["cat", "dog", "eel", "fox"])[y]
    votes, det = simulate_annotators(
        X, labels_str, 7, random_state=0, return_details=True
    )
    assert votes.shape == (200, 4) and votes.dtype == np.int64
    assert np.all(votes.sum(axis=1) == 7)
    assert isinstance(det, Bunch)
    assert det.annotator_labels.shape == (200, 7) and det.annotator_labels.dtype == np.int64
    np.testing.assert_array_equal(det.classes, ["cat", "dog", "eel", "fox"])
    np.testing.assert_array_equal(votes, votes_from_annotator_labels(det.annotator_labels, 4))
    assert det.difficulty.shape == (200,)
    assert det.difficulty.min() > 0 and det.difficulty.max() < 1
    assert det.error_prob.shape == (200, 7) and det.annotator_skill.shape == (7,)


def test_images_are_flattened():
    rng = np.random.RandomState(0)
    X = rng.rand(40, 1, 4, 4)
    y = np.repeat([0, 1], 20)
    votes = simulate_annotators(X, y, random_state=0)
    assert votes.shape == (40, 2)


def test_user_difficulty_and_skill_are_used():
    y = np.repeat([0, 1, 2], 100)
    d = np.linspace(0, 1, 300)
    skill = np.array([0.0, 2.0])
    votes, det = simulate_annotators(
        None,
        y,
        2,
        difficulty=d,
        annotator_skill=skill,
        noise_rate=0.2,
        random_state=0,
        return_details=True,
    )
    np.testing.assert_array_equal(det.difficulty, d)
    np.testing.assert_array_equal(det.annotator_skill, skill)
    # A zero-skill annotator never errs.
    np.testing.assert_array_equal(det.annotator_labels[:, 0], y)
    assert np.isclose(det.error_prob[:, 1].mean(), 0.4)


def test_single_class_and_zero_noise():
    X = np.random.RandomState(0).rand(10, 3)
    votes = simulate_annotators(X, np.zeros(10), 3, noise_rate=1.0, random_state=0)
    np.testing.assert_array_equal(votes, np.full((10, 1), 3))
    y = np.repeat([0, 1], 5)
    votes = simulate_annotators(X, y, 3, noise_rate=0.0, random_state=0)
    np.testing.assert_array_equal(votes, 3 * np.eye(2, dtype=np.int64)[y])


def test_full_noise_two_classes_flips_everything():
    X = np.random.RandomState(0).rand(10, 3)
    y = np.repeat([0, 1], 5)
    skill = np.ones(3)
    votes = simulate_annotators(
        X, y, 3, difficulty=np.full(10, 0.5), annotator_skill=skill, noise_rate=1.0
    )
    np.testing.assert_array_equal(votes, 3 * np.eye(2, dtype=np.int64)[1 - y])


_X = np.random.RandomState(0).rand(6, 2)
_Y = np.array([0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(X=_X[:5], y=_Y), "inconsistent lengths"),
        (dict(X=_X, y=_Y[:, None]), "y must be a non-empty 1-D array"),
        (dict(X=_X, y=_Y, n_annotators=0), "n_annotators must be an integer >= 1"),
        (dict(X=_X, y=_Y, n_annotators=2.5), "n_annotators must be an integer >= 1"),
        (dict(X=_X, y=_Y, noise_rate=1.5), r"noise_rate must be in \[0, 1\]"),
        (dict(X=_X, y=_Y, noise_rate=-0.1), r"noise_rate must be in \[0, 1\]"),
        (dict(X=_X, y=_Y, noise_rate="high"), "noise_rate must be a real number"),
        (dict(X=_X, y=_Y, n_impostors=-1), "n_impostors must be an integer >= 0"),
        (dict(X=_X, y=_Y, difficulty=np.ones(5)), r"difficulty must have shape \(6,\)"),
        (dict(X=_X, y=_Y, difficulty=np.full(6, 2.0)), "difficulty must be <= 1"),
        (dict(X=_X, y=_Y, difficulty=np.full(6, np.nan)), "difficulty must be finite"),
        (
            dict(X=_X, y=_Y, n_annotators=2, annotator_skill=[1.0]),
            r"annotator_skill must have shape \(2,\)",
        ),
        (
            dict(X=_X, y=_Y, n_annotators=2, annotator_skill=[1.0, -1.0]),
            "annotator_skill must be >= 0",
        ),
        (dict(X=None, y=_Y), "X is required unless difficulty is given"),
    ],
)
def test_simulate_annotators_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_annotators(**kwargs)


# --------------------------------------------------------------------------- #
# votes_from_annotator_labels
# --------------------------------------------------------------------------- #
def test_votes_from_annotator_labels_missing():
    labels = np.array([[0, 2, -1], [np.nan, 1, 1], [-1, -1, -1]])
    votes = votes_from_annotator_labels(labels, 3)
    np.testing.assert_array_equal(votes, [[1, 0, 1], [0, 2, 0], [0, 0, 0]])
    assert votes.dtype == np.int64
    np.testing.assert_array_equal(votes_from_annotator_labels([2, 0], 3), [[0, 0, 1], [1, 0, 0]])


@settings(max_examples=50, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda k: st.tuples(
            st.just(k),
            st.lists(st.lists(st.integers(-1, k - 1), min_size=3, max_size=3), min_size=1),
        )
    )
)
def test_votes_from_annotator_labels_counts(case):
    k, rows = case
    labels = np.array(rows)
    votes = votes_from_annotator_labels(labels, k)
    np.testing.assert_array_equal(votes.sum(axis=1), (labels >= 0).sum(axis=1))
    for c in range(k):
        np.testing.assert_array_equal(votes[:, c], (labels == c).sum(axis=1))


@pytest.mark.parametrize(
    "labels, n_classes, match",
    [
        ([[0, 3]], 3, r"labels must be integers in \[0, 3\)"),
        ([[0, 0.5]], 3, r"labels must be integers in \[0, 3\)"),
        ([[0, -2]], 3, r"labels must be integers in \[0, 3\)"),
        ([[0, 1]], 0, "n_classes must be an integer >= 1"),
        (np.zeros((2, 2, 2)), 3, "labels must be 1-D or 2-D"),
    ],
)
def test_votes_from_annotator_labels_bad_input(labels, n_classes, match):
    with pytest.raises(ValueError, match=match):
        votes_from_annotator_labels(labels, n_classes)


# --------------------------------------------------------------------------- #
# load_digits_votes
# --------------------------------------------------------------------------- #
def test_load_digits_votes_bunch(digits):
    assert digits.data.shape == (1797, 64) and digits.data.dtype == np.float32
    assert digits.data.min() == 0.0 and digits.data.max() == 1.0
    assert digits.votes.shape == (1797, 10) and digits.votes.dtype == np.int64
    assert np.all(digits.votes.sum(axis=1) == 3)
    assert digits.annotator_labels.shape == (1797, 3)
    assert digits.target.shape == (1797,) and digits.target.dtype == np.int64
    assert digits.difficulty.shape == (1797,)
    np.testing.assert_array_equal(digits.target_names, np.arange(10))
    assert "simulated annotators" in digits.DESCR
    assert "images" not in digits
    err = (digits.annotator_labels != digits.target[:, None]).mean()
    assert abs(err - 0.25) < 0.03


def test_load_digits_votes_deterministic(digits):
    again = load_digits_votes(n_annotators=3, noise_rate=0.25, random_state=0)
    np.testing.assert_array_equal(digits.votes, again.votes)
    np.testing.assert_array_equal(digits.annotator_labels, again.annotator_labels)
    other = load_digits_votes(n_annotators=3, noise_rate=0.25, random_state=1)
    assert not np.array_equal(digits.votes, other.votes)


def test_load_digits_votes_images_and_return_X_y(digits):
    bunch = load_digits_votes(as_images=True)
    assert bunch.images.shape == (1797, 1, 8, 8) and bunch.images.dtype == np.float32
    np.testing.assert_array_equal(bunch.images.reshape(1797, -1), bunch.data)
    X, votes = load_digits_votes(return_X_y=True)
    np.testing.assert_array_equal(X, digits.data)
    np.testing.assert_array_equal(votes, digits.votes)
    X_img, _ = load_digits_votes(return_X_y=True, as_images=True, n_annotators=5)
    assert X_img.shape == (1797, 1, 8, 8)


# --------------------------------------------------------------------------- #
# load_cifar10n
# --------------------------------------------------------------------------- #
_LABEL_KEYS = (
    "clean_label",
    "aggre_label",
    "worse_label",
    "random_label1",
    "random_label2",
    "random_label3",
)


def _write_fake_cifar(folder, n=40, skip=None):
    rng = np.random.RandomState(0)
    clean = np.tile(np.arange(10), n // 10)
    if skip != "cifar10.npz":
        np.savez(
            folder / "cifar10.npz",
            x_train=rng.randint(0, 256, size=(n, 32, 32, 3), dtype=np.uint8),
            y_train_clean=clean,
            x_test=rng.randint(0, 256, size=(20, 32, 32, 3), dtype=np.uint8),
            y_test=np.repeat(np.arange(10), 2),
        )
    if skip != "cifar10n_labels.npz":
        labels = {k: (clean + (rng.rand(n) < 0.3)) % 10 for k in _LABEL_KEYS}
        labels["clean_label"] = clean
        np.savez(folder / "cifar10n_labels.npz", **labels)
    return clean


def test_load_cifar10n_fake_folder(tmp_path):
    clean = _write_fake_cifar(tmp_path)
    lab = np.load(tmp_path / "cifar10n_labels.npz")
    data = load_cifar10n(tmp_path)
    assert data.x_train.shape == (40, 32, 32, 3) and data.x_train.dtype == np.uint8
    expected = sum(np.eye(10, dtype=np.int64)[lab[f"random_label{k}"]] for k in (1, 2, 3))
    np.testing.assert_array_equal(data.votes, expected)
    assert data.votes.dtype == np.int64
    assert set(data.labels) == {"aggre", "random1", "random2", "random3", "worse", "clean"}
    np.testing.assert_array_equal(data.labels["clean"], clean)
    np.testing.assert_array_equal(data.labels["worse"], lab["worse_label"])
    assert data.x_test.shape == (20, 32, 32, 3) and data.y_test.shape == (20,)
    aggre = load_cifar10n(tmp_path, noise="aggre")
    np.testing.assert_array_equal(aggre.votes, np.eye(10)[lab["aggre_label"]])


def test_load_cifar10n_fake_subset(tmp_path):
    _write_fake_cifar(tmp_path, n=100)
    a = load_cifar10n(tmp_path, subset=20, random_state=0)
    b = load_cifar10n(tmp_path, subset=20, random_state=0)
    c = load_cifar10n(tmp_path, subset=20, random_state=1)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)
    assert np.all(np.diff(a.indices) > 0)
    np.testing.assert_array_equal(np.bincount(a.target, minlength=10), np.full(10, 2))
    full = load_cifar10n(tmp_path)
    np.testing.assert_array_equal(a.x_train, full.x_train[a.indices])
    np.testing.assert_array_equal(a.votes, full.votes[a.indices])


@pytest.mark.parametrize("missing", ["cifar10.npz", "cifar10n_labels.npz"])
def test_load_cifar10n_missing_file(tmp_path, missing):
    _write_fake_cifar(tmp_path, skip=missing)
    with pytest.raises(FileNotFoundError, match=missing):
        load_cifar10n(tmp_path)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(noise="bogus"), "noise must be one of"),
        (dict(subset=0), "subset must be an integer >= 1"),
        (dict(subset=1000), "subset must be <= 40"),
    ],
)
def test_load_cifar10n_bad_input(tmp_path, kwargs, match):
    _write_fake_cifar(tmp_path)
    with pytest.raises(ValueError, match=match):
        load_cifar10n(tmp_path, **kwargs)


def test_load_cifar10n_misaligned(tmp_path):
    _write_fake_cifar(tmp_path)
    lab = dict(np.load(tmp_path / "cifar10n_labels.npz"))
    lab["clean_label"] = np.roll(lab["clean_label"], 1)
    np.savez(tmp_path / "cifar10n_labels.npz", **lab)
    with pytest.raises(ValueError, match="not aligned"):
        load_cifar10n(tmp_path)


def test_load_cifar10n_missing_array(tmp_path):
    _write_fake_cifar(tmp_path)
    lab = dict(np.load(tmp_path / "cifar10n_labels.npz"))
    del lab["random_label2"]
    np.savez(tmp_path / "cifar10n_labels.npz", **lab)
    with pytest.raises(ValueError, match="lacks the arrays"):
        load_cifar10n(tmp_path)


@pytest.mark.cifar
def test_load_cifar10n_real_folder():
    cifar10n_dir = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10n"
    if not cifar10n_dir.is_dir():
        pytest.skip(f"CIFAR-10N data not found at {cifar10n_dir}")
    data = load_cifar10n(cifar10n_dir, subset=500, random_state=0)
    assert data.x_train.shape == (500, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert data.votes.shape == (500, 10) and data.votes.dtype == np.int64
    assert np.all(data.votes.sum(axis=1) == 3)
    np.testing.assert_array_equal(np.bincount(data.target, minlength=10), np.full(10, 50))
    assert data.x_test.shape == (10000, 32, 32, 3) and data.y_test.shape == (10000,)
    # Real human noise: about 17 % per annotator, some disagreement.
    noise = (data.labels["random1"] != data.target).mean()
    assert 0.08 < noise < 0.3
    assert 0.2 < (data.votes.max(axis=1) < 3).mean() < 0.6
    again = load_cifar10n(cifar10n_dir, subset=500, random_state=0)
    np.testing.assert_array_equal(data.indices, again.indices)
