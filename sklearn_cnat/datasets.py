"""Data sets with multi-annotator votes: simulated human noise and CIFAR-10N.

* :func:`simulate_annotators` draws annotator labels and vote counts from a
  generative model of human label noise: hard instances get more errors, and
  errors go to plausible impostor classes (see ``docs/datasets.md``).
* :func:`votes_from_annotator_labels` turns an annotator label matrix (with
  missing entries) into vote counts.
* :func:`load_digits_votes` is scikit-learn's embedded digits with simulated
  annotators: the package's default data, no download.
* :func:`load_cifar10n` reads CIFAR-10 images with the CIFAR-10N human labels
  from a local folder.
* :func:`load_image_folder` reads a folder of images (one subfolder per class, or
  flat) and returns the images with their file names, the key that ties them to
  crowd votes (:meth:`sklearn_cnat.evidence.LabelEvidence.align`).
"""

import numbers
from pathlib import Path

import numpy as np
from scipy.stats import rankdata
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from sklearn.utils import Bunch, check_random_state
from sklearn.utils.validation import check_array

from .exceptions import CNATValueError, InputFileError

__all__ = [
    "simulate_annotators",
    "votes_from_annotator_labels",
    "load_digits_votes",
    "load_cifar10n",
    "load_image_folder",
]

# Constants of the generative model (docs/datasets.md, "Defaults").
_N_COMPONENTS = 50  # PCA dimensions of the space the difficulty is measured in
_CONTRAST = 0.8  # gamma: g(d) is proportional to (1 - gamma) + 2 * gamma * d
_SKILL_SIGMA = 0.3  # log-scale spread of the default annotator skills
_IMPOSTOR_MASS = 0.8  # share of a confusion row's error mass on the impostor classes
_DIRICHLET_CONCENTRATION = 20.0  # tau: spread of annotator rows around the base row

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_CIFAR_IMAGES = "cifar10.npz"
_CIFAR_LABELS = "cifar10n_labels.npz"
_CIFAR_NOISE = {
    "random": ("random_label1", "random_label2", "random_label3"),
    "aggre": ("aggre_label",),
    "worse": ("worse_label",),
    "random1": ("random_label1",),
    "random2": ("random_label2",),
    "random3": ("random_label3",),
    "clean": ("clean_label",),
}


# --------------------------------------------------------------------------- #
# Validation helpers
# --------------------------------------------------------------------------- #
def _check_int(value, name, low):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise CNATValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    if value < low:
        raise CNATValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    return int(value)


def _check_unit_interval(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise CNATValueError(f"{name} must be a real number in [0, 1], got {value!r}.")
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise CNATValueError(f"{name} must be in [0, 1], got {value!r}.")
    return float(value)


def _check_vector(values, name, n, low=None, high=None):
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise CNATValueError(f"{name} must have shape ({n},), got {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise CNATValueError(f"{name} must be finite.")
    if low is not None and np.any(arr < low):
        raise CNATValueError(f"{name} must be >= {low}, got min {arr.min()!r}.")
    if high is not None and np.any(arr > high):
        raise CNATValueError(f"{name} must be <= {high}, got max {arr.max()!r}.")
    return arr


# --------------------------------------------------------------------------- #
# Generative model: private kernels (arrays in, arrays out)
# --------------------------------------------------------------------------- #
def _embed(X):
    """Standardise the features and project them on the leading principal axes."""
    dtype = np.float64 if X.dtype == np.float64 else np.float32  # images: save memory
    X = np.asarray(X, dtype=dtype).reshape(X.shape[0], -1)
    Z = StandardScaler().fit_transform(X)
    n_components = min(_N_COMPONENTS, Z.shape[0], Z.shape[1])
    if n_components < Z.shape[1]:
        # Fixed random_state: the difficulty is a property of the data, not of the
        # annotators' seed.
        Z = PCA(n_components=n_components, random_state=0).fit_transform(Z)
    return Z


def _class_centres(Z, y_idx, n_classes):
    centres = np.zeros((n_classes, Z.shape[1]))
    np.add.at(centres, y_idx, Z)
    return centres / np.bincount(y_idx, minlength=n_classes)[:, None]


def _centre_difficulty(Z, y_idx, centres):
    """Rank-based difficulty in (0, 1) from distances to the class centres.

    rho_i = a_i / (a_i + b_i), a_i the distance to the own class centre, b_i to
    the nearest other class centre; d_i = (rank(rho_i) - 1/2) / n.
    """
    dist = np.stack([np.linalg.norm(Z - c, axis=1) for c in centres], axis=1)  # (n, K)
    n = len(y_idx)
    own = dist[np.arange(n), y_idx]
    if centres.shape[0] == 1:
        ratio = own
    else:
        other = dist.copy()
        other[np.arange(n), y_idx] = np.inf
        other = other.min(axis=1)
        total = own + other
        ratio = np.divide(own, total, out=np.full(n, 0.5), where=total > 0)
    return (rankdata(ratio, method="average") - 0.5) / n


def _difficulty_weight(difficulty):
    """g(d_i): increasing in d, normalised to mean 1 over the sample."""
    w = (1.0 - _CONTRAST) + 2.0 * _CONTRAST * difficulty
    return w / w.mean()


def _default_skill(n_annotators, rng):
    """Log-normal skill multipliers normalised to mean 1."""
    s = np.exp(_SKILL_SIGMA * rng.standard_normal(n_annotators))
    return s / s.mean()


def _impostors(centre_dist, n_impostors):
    """For each class, the ``n_impostors`` other classes with the nearest centres."""
    n_classes = centre_dist.shape[0]
    d = centre_dist.astype(np.float64, copy=True)
    np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1, kind="stable")
    return order[:, : min(n_impostors, n_classes - 1)]


def _base_confusion(centre_dist, impostors):
    """Error rows (K, K), zero diagonal: impostors share _IMPOSTOR_MASS by 1/distance."""
    n_classes = centre_dist.shape[0]
    base = np.zeros((n_classes, n_classes))
    n_imp = impostors.shape[1]
    for k in range(n_classes):
        others = np.setdiff1d(np.arange(n_classes), [k])
        if len(others) == 0:
            continue
        rest = np.setdiff1d(others, impostors[k])
        imp_mass = _IMPOSTOR_MASS if len(rest) else 1.0
        if n_imp == 0:
            imp_mass = 0.0
        else:
            inv = 1.0 / (centre_dist[k, impostors[k]] + 1e-12)
            base[k, impostors[k]] = imp_mass * inv / inv.sum()
        if len(rest):
            base[k, rest] = (1.0 - imp_mass) / len(rest)
    return base


def _annotator_confusions(base, n_annotators, rng):
    """Annotator-specific rows C_j[k] ~ Dirichlet(tau * base[k]) on the classes != k."""
    n_classes = base.shape[0]
    conf = np.zeros((n_annotators, n_classes, n_classes))
    for k in range(n_classes):
        support = np.flatnonzero(base[k] > 0)
        if len(support) == 1:
            conf[:, k, support[0]] = 1.0
        elif len(support) > 1:
            alpha = _DIRICHLET_CONCENTRATION * base[k, support]
            conf[:, k, support] = rng.dirichlet(alpha, size=n_annotators)
    return conf


def _draw_labels(y_idx, error_prob, confusion, rng):
    """Annotator labels (n, M): the true class, or with prob. p_ij a draw from C_j[y_i]."""
    n, n_annotators = error_prob.shape
    labels = np.repeat(y_idx[:, None], n_annotators, axis=1)
    for j in range(n_annotators):
        u_err = rng.random(n)
        u_cls = rng.random(n)
        errs = u_err < error_prob[:, j]
        rows = confusion[j, y_idx[errs]]  # (n_err, K)
        cum = np.cumsum(rows, axis=1)
        cum[:, -1] = 1.0
        labels[errs, j] = (cum < u_cls[errs, None]).sum(axis=1)
    return labels


def _votes(labels, n_classes):
    """Vote counts (n, K) int64 from integer labels (n, M); negatives are missing."""
    n = labels.shape[0]
    rows, cols = np.nonzero(labels >= 0)
    flat = rows * n_classes + labels[rows, cols]
    return np.bincount(flat, minlength=n * n_classes).reshape(n, n_classes).astype(np.int64)


# --------------------------------------------------------------------------- #
# Public functions
# --------------------------------------------------------------------------- #
def simulate_annotators(
    X,
    y,
    n_annotators=3,
    *,
    difficulty=None,
    noise_rate=0.2,
    n_impostors=2,
    annotator_skill=None,
    random_state=None,
    return_details=False,
):
    """Draw multi-annotator votes from a generative model of human label noise.

    Each instance ``i`` has a difficulty ``d_i`` in [0, 1]; annotator ``j``
    errs on it with probability ``p_ij = min(1, noise_rate * g(d_i) * s_j)``,
    where ``g`` is increasing with mean 1 over the sample and ``s_j`` is the
    annotator's skill multiplier (larger is worse). An erring annotator picks a
    wrong class from its own confusion row ``C_j[y_i]``, which puts most of
    its mass on the ``n_impostors`` classes whose centres lie nearest to the
    true class's centre. The model and its defaults are in ``docs/datasets.md``.

    Parameters
    ----------
    X : array-like of shape (n_samples, ...) or None
        Features (any trailing shape; flattened). Used for the default
        difficulty and to pick the impostor classes. May be None only when
        ``difficulty`` is given; the impostors are then drawn at random.
    y : array-like of shape (n_samples,)
        Clean labels. The vote columns are the classes ``np.unique(y)``.
    n_annotators : int, default=3
        Number of annotators ``M``; every annotator labels every instance.
    difficulty : array-like of shape (n_samples,), default=None
        Instance difficulties in [0, 1]. None computes them from ``X`` and
        ``y``: in the standardised, PCA-reduced feature space (at most 50
        components), ``rho_i = a_i / (a_i + b_i)`` with ``a_i`` the distance
        to the own class centre and ``b_i`` to the nearest other class
        centre, mapped to (0, 1) by rank: ``d_i = (rank(rho_i) - 1/2) / n``.
    noise_rate : float, default=0.2
        Target overall error rate, in [0, 1]. The realised rate is
        ``noise_rate * mean(s)`` (``mean(s) = 1`` for the default skills)
        unless the cap at 1 binds.
    n_impostors : int, default=2
        Number of impostor classes per true class (clipped to ``K - 1``); they
        receive 80 % of the error mass on average. 0 spreads errors uniformly.
    annotator_skill : array-like of shape (n_annotators,), default=None
        Non-negative skill multipliers ``s_j``. None draws
        ``s_j ∝ exp(0.3 z_j)``, ``z_j ~ N(0, 1)``, normalised to mean 1.
    random_state : int, RandomState instance or None, default=None
        Seed of the draws (the difficulty itself does not depend on it).
    return_details : bool, default=False
        Also return a :class:`~sklearn.utils.Bunch` describing the draw.

    Returns
    -------
    votes : ndarray of shape (n_samples, n_classes), dtype int64
        Vote counts; every row sums to ``n_annotators``.
    details : Bunch
        Only when ``return_details``. ``annotator_labels`` (n, M) int64
        class indices into ``classes``; ``difficulty`` (n,); ``error_prob``
        (n, M) the ``p_ij``; ``annotator_skill`` (M,); ``confusion`` (M, K, K)
        error rows ``C_j[true, given]`` (zero diagonal); ``impostors``
        (K, min(n_impostors, K - 1)) class indices; ``classes`` (K,).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cnat.datasets import simulate_annotators
    >>> X = np.r_[np.zeros((5, 2)), np.ones((5, 2))] + np.arange(10)[:, None] / 50
    >>> y = np.repeat([0, 1], 5)
    >>> votes = simulate_annotators(X, y, n_annotators=4, random_state=0)
    >>> votes.shape, votes.dtype.name, set(votes.sum(axis=1).tolist())
    ((10, 2), 'int64', {4})
    """
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] == 0:
        raise CNATValueError(f"y must be a non-empty 1-D array, got shape {y.shape}.")
    n = y.shape[0]
    if X is not None:
        X = check_array(X, allow_nd=True, input_name="X")
        if X.shape[0] != n:
            raise CNATValueError(
                f"X and y have inconsistent lengths: {X.shape[0]} and {n}."
            )
    elif difficulty is None:
        raise CNATValueError("X is required unless difficulty is given.")
    n_annotators = _check_int(n_annotators, "n_annotators", 1)
    noise_rate = _check_unit_interval(noise_rate, "noise_rate")
    n_impostors = _check_int(n_impostors, "n_impostors", 0)
    if difficulty is not None:
        difficulty = _check_vector(difficulty, "difficulty", n, low=0.0, high=1.0)
    if annotator_skill is not None:
        annotator_skill = _check_vector(
            annotator_skill, "annotator_skill", n_annotators, low=0.0
        )
    rng = check_random_state(random_state)

    classes, y_idx = np.unique(y, return_inverse=True)
    y_idx = y_idx.ravel()
    n_classes = len(classes)

    if X is not None:
        Z = np.asarray(_embed(X), dtype=np.float64)
        centres = _class_centres(Z, y_idx, n_classes)
        centre_dist = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(-1))
        if difficulty is None:
            difficulty = _centre_difficulty(Z, y_idx, centres)
    else:
        centre_dist = rng.random((n_classes, n_classes)) + 0.5
        centre_dist = (centre_dist + centre_dist.T) / 2

    skill = _default_skill(n_annotators, rng) if annotator_skill is None else annotator_skill
    impostors = _impostors(centre_dist, n_impostors)
    confusion = _annotator_confusions(_base_confusion(centre_dist, impostors), n_annotators, rng)
    error_prob = np.minimum(
        1.0, noise_rate * _difficulty_weight(difficulty)[:, None] * skill[None, :]
    )
    if n_classes == 1:
        error_prob = np.zeros_like(error_prob)  # no wrong class to give
    labels = _draw_labels(y_idx, error_prob, confusion, rng)
    votes = _votes(labels, n_classes)
    if not return_details:
        return votes
    details = Bunch(
        annotator_labels=labels.astype(np.int64),
        difficulty=difficulty,
        error_prob=error_prob,
        annotator_skill=skill,
        confusion=confusion,
        impostors=impostors,
        classes=classes,
    )
    return votes, details


def votes_from_annotator_labels(labels, n_classes):
    """Count votes from an annotator label matrix with missing entries.

    Parameters
    ----------
    labels : array-like of shape (n_samples, n_annotators) or (n_samples,)
        Class indices in ``[0, n_classes)``; ``-1`` or NaN marks a missing label.
    n_classes : int
        Number of classes ``K`` (columns of the result).

    Returns
    -------
    votes : ndarray of shape (n_samples, n_classes), dtype int64
        ``votes[i, k]`` is the number of annotators who gave instance ``i``
        the class ``k``.

    Examples
    --------
    >>> from sklearn_cnat.datasets import votes_from_annotator_labels
    >>> votes_from_annotator_labels([[0, 1, -1], [2, 2, float("nan")]], 3).tolist()
    [[1, 1, 0], [0, 0, 2]]
    """
    n_classes = _check_int(n_classes, "n_classes", 1)
    arr = np.asarray(labels, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise CNATValueError(f"labels must be 1-D or 2-D, got {arr.ndim} dimensions.")
    missing = np.isnan(arr) | (arr == -1)
    given = arr[~missing]
    if np.any(given != np.round(given)) or np.any((given < 0) | (given >= n_classes)):
        raise CNATValueError(
            f"labels must be integers in [0, {n_classes}) or -1/NaN for missing."
        )
    idx = np.where(missing, -1, arr).astype(np.int64)
    return _votes(idx, n_classes)


def load_digits_votes(
    n_annotators=3,
    noise_rate=0.25,
    random_state=0,
    return_X_y=False,
    as_images=False,
):
    """Load scikit-learn's digits with simulated annotator votes.

    The 1,797 8x8 digit images that ship with scikit-learn (no download),
    labelled by ``n_annotators`` simulated annotators drawn with
    :func:`simulate_annotators` (default difficulty, two impostor classes).

    Parameters
    ----------
    n_annotators : int, default=3
        Number of simulated annotators.
    noise_rate : float, default=0.25
        Overall annotator error rate, in [0, 1].
    random_state : int, RandomState instance or None, default=0
        Seed of the annotators; the default makes the data deterministic.
    return_X_y : bool, default=False
        Return ``(X, votes)`` instead of a Bunch.
    as_images : bool, default=False
        Also give the pixels as images of shape (n, 1, 8, 8); with
        ``return_X_y``, ``X`` is then the images.

    Returns
    -------
    data : Bunch
        ``data`` (1797, 64) float32 in [0, 1]; ``images`` (1797, 1, 8, 8)
        float32, only when ``as_images``; ``votes`` (1797, 10) int64;
        ``annotator_labels`` (1797, n_annotators) int64; ``target`` (1797,)
        int64 clean labels; ``difficulty`` (1797,); ``annotator_skill``
        (n_annotators,); ``target_names`` (10,); ``DESCR`` str.
    (X, votes) : tuple
        When ``return_X_y``.

    Examples
    --------
    >>> from sklearn_cnat.datasets import load_digits_votes
    >>> X, votes = load_digits_votes(return_X_y=True)
    >>> X.shape, votes.shape
    ((1797, 64), (1797, 10))
    """
    digits = load_digits()
    data = (digits.data / 16.0).astype(np.float32)
    target = digits.target.astype(np.int64)
    votes, details = simulate_annotators(
        data,
        target,
        n_annotators,
        noise_rate=noise_rate,
        random_state=random_state,
        return_details=True,
    )
    images = data.reshape(-1, 1, 8, 8) if as_images else None
    if return_X_y:
        return (images if as_images else data), votes
    bunch = Bunch(
        data=data,
        votes=votes,
        annotator_labels=details.annotator_labels,
        target=target,
        difficulty=details.difficulty,
        annotator_skill=details.annotator_skill,
        target_names=np.arange(10),
        DESCR=_DIGITS_DESCR.format(
            n_annotators=details.annotator_labels.shape[1], noise_rate=noise_rate
        ),
    )
    if as_images:
        bunch.images = images
    return bunch


_DIGITS_DESCR = """\
Digits with simulated annotators
--------------------------------

scikit-learn's optical recognition of handwritten digits data (1,797 8x8
images, 10 classes; pixels scaled from 0..16 to [0, 1]) labelled by
{n_annotators} simulated annotators with overall error rate {noise_rate}.
Annotator j errs on image i with probability
min(1, noise_rate * g(d_i) * s_j), where d_i is the image's difficulty (rank
of its distance to its own class centre relative to the nearest other class
centre, in a standardised PCA space), g increases with mean 1 and s_j is the
annotator's skill multiplier; errors go mostly (80 %) to the two classes
whose centres lie nearest to the true class's. See docs/datasets.md.
"""


def _stratified_subset(y, size, rng):
    """Sorted indices of a subset of ``size`` rows, class shares kept by largest remainder."""
    classes, y_idx = np.unique(y, return_inverse=True)
    counts = np.bincount(y_idx)
    exact = counts * size / len(y)
    alloc = np.floor(exact).astype(np.int64)
    short = size - alloc.sum()
    if short:
        order = np.argsort(-(exact - alloc), kind="stable")
        alloc[order[:short]] += 1
    picks = [
        rng.choice(np.flatnonzero(y_idx == k), size=alloc[k], replace=False)
        for k in range(len(classes))
    ]
    return np.sort(np.concatenate(picks))


def _read_npz(path, keys):
    with np.load(path) as npz:
        missing = [k for k in keys if k not in npz.files]
        if missing:
            raise CNATValueError(f"{path.name} lacks the arrays {missing}.")
        return {k: npz[k] for k in keys}


def load_cifar10n(path, noise="random", subset=None, random_state=None):
    """Load CIFAR-10 images with the CIFAR-10N human labels from a local folder.

    The folder holds ``cifar10.npz`` (``x_train`` (50000, 32, 32, 3) uint8,
    ``y_train_clean``, ``x_test``, ``y_test``) and ``cifar10n_labels.npz``
    (``clean_label``, ``aggre_label``, ``worse_label``, ``random_label1..3``),
    training arrays in the same order. Nothing is downloaded or copied.

    Parameters
    ----------
    path : str or path-like
        The folder.
    noise : {"random", "aggre", "worse", "random1", "random2", "random3", \
"clean"}, default="random"
        Labels the votes count. ``"random"``: the three independent human
        annotations, ``votes = sum_k onehot(random_label_k)`` (3 votes per
        image). Any other value: one vote for that single label.
    subset : int, default=None
        Number of training images to keep, drawn stratified by the clean label
        (class shares kept) and returned in the original order. None keeps
        all.
    random_state : int, RandomState instance or None, default=None
        Seed of the subset draw.

    Returns
    -------
    data : Bunch
        ``x_train`` (n, 32, 32, 3) uint8 NHWC; ``votes`` (n, 10) int64;
        ``labels`` dict of (n,) int64 arrays with keys ``"aggre"``,
        ``"random1"``, ``"random2"``, ``"random3"``, ``"worse"``,
        ``"clean"``; ``target`` (n,) the clean labels; ``indices`` (n,)
        positions in the full training set; ``x_test`` (10000, 32, 32, 3)
        uint8; ``y_test`` (10000,) int64; ``target_names``; ``noise``;
        ``DESCR``.

    Raises
    ------
    FileNotFoundError
        If the folder or one of its two files is missing.
    """
    if noise not in _CIFAR_NOISE:
        raise CNATValueError(f"noise must be one of {sorted(_CIFAR_NOISE)}, got {noise!r}.")
    if subset is not None:
        subset = _check_int(subset, "subset", 1)
    folder = Path(path)
    for name in (_CIFAR_IMAGES, _CIFAR_LABELS):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{name} not found in {folder}: load_cifar10n needs "
                f"{_CIFAR_IMAGES} and {_CIFAR_LABELS} (see the folder's README.md)."
            )
    label_keys = (
        "clean_label",
        "aggre_label",
        "worse_label",
        "random_label1",
        "random_label2",
        "random_label3",
    )
    lab = _read_npz(folder / _CIFAR_LABELS, label_keys)
    img = _read_npz(folder / _CIFAR_IMAGES, ("x_train", "y_train_clean", "x_test", "y_test"))
    n_train = img["x_train"].shape[0]
    for key in label_keys:
        if lab[key].shape != (n_train,):
            raise CNATValueError(
                f"{_CIFAR_LABELS}:{key} has shape {lab[key].shape}, expected ({n_train},)."
            )
    if not np.array_equal(lab["clean_label"], img["y_train_clean"]):
        raise CNATValueError(
            f"clean_label in {_CIFAR_LABELS} differs from y_train_clean in "
            f"{_CIFAR_IMAGES}: the files are not aligned."
        )
    if subset is None:
        indices = np.arange(n_train)
    else:
        if subset > n_train:
            raise CNATValueError(f"subset must be <= {n_train} (training images), got {subset}.")
        indices = _stratified_subset(
            lab["clean_label"], subset, check_random_state(random_state)
        )
    n_classes = len(CIFAR10_CLASSES)
    labels = {
        name: lab[key][indices].astype(np.int64)
        for name, key in (
            ("aggre", "aggre_label"),
            ("random1", "random_label1"),
            ("random2", "random_label2"),
            ("random3", "random_label3"),
            ("worse", "worse_label"),
            ("clean", "clean_label"),
        )
    }
    noisy = np.stack([lab[key][indices] for key in _CIFAR_NOISE[noise]], axis=1)
    votes = votes_from_annotator_labels(noisy, n_classes)
    return Bunch(
        x_train=np.ascontiguousarray(img["x_train"][indices]),
        votes=votes,
        labels=labels,
        target=labels["clean"],
        indices=indices,
        x_test=img["x_test"],
        y_test=img["y_test"].astype(np.int64),
        target_names=np.array(CIFAR10_CLASSES),
        noise=noise,
        DESCR=_CIFAR_DESCR,
    )


_CIFAR_DESCR = """\
CIFAR-10 with CIFAR-10N human labels
------------------------------------

CIFAR-10 images (Krizhevsky, 2009) with the CIFAR-10N human annotations
(Wei et al., "Learning with Noisy Labels Revisited: A Study Using Real-World
Human Annotations", ICLR 2022; labels CC BY-NC 4.0). random_label1..3 are
three independent annotations of each training image (noise rates about
17-18 % each), aggre their majority (9.0 %), worse a wrong one whenever any
annotator was wrong (40.2 %). votes counts the labels chosen by `noise`.
"""


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _image_files(folder):
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def _read_image(path, image_size):
    """One image as uint8 (H, W, 3); an unreadable file raises InputFileError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if image_size is not None:
                img = img.resize((image_size, image_size))
            return np.asarray(img, dtype=np.uint8)
    except UnidentifiedImageError:
        raise InputFileError(f"{path}: not an image PIL can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputFileError(f"{path}: cannot decode the image ({exc}); the file may be truncated or "
                             f"corrupt") from None


def load_image_folder(path, *, layout="auto", image_size=None):
    """Load a folder of images with their file names (and classes from subfolders).

    Two layouts: ``"classes"``, one subfolder per class holding its images
    (``root/cat/001.png``), and ``"flat"``, the images directly in the folder
    (``root/001.png``). Hidden files and files without an image extension
    (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.gif``, ``.tif``, ``.tiff``, ``.webp``)
    are skipped. Images are read as RGB, in sorted order (classes, then file names).

    Parameters
    ----------
    path : str or path-like
        The folder.
    layout : {"auto", "classes", "flat"}, default="auto"
        ``"auto"``: ``"classes"`` when the images are in subfolders, ``"flat"`` when they
        are in the folder itself; a folder with images in both places is refused.
    image_size : int or None, default=None
        Resize every image to ``image_size x image_size``. None keeps the sizes, which
        must then all agree.

    Returns
    -------
    data : Bunch
        ``images`` (n, H, W, 3) uint8 (NHWC, as ``CNATClassifier`` reads images);
        ``names`` (n,) str, the paths relative to ``path`` in POSIX form
        (``"cat/001.png"`` or ``"001.png"``), the keys to match votes by;
        ``filenames`` (n,) str, full paths; ``target`` (n,) int64 class indices and
        ``target_names`` (K,) the subfolder names, or None for ``"flat"``; ``layout``.

    Raises
    ------
    InputFileError
        For a missing folder, a folder without images, mixed layouts, an image that
        cannot be decoded (a truncated PNG, say) or images of different sizes without
        ``image_size``; the message names the file.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from sklearn_cnat.datasets import load_image_folder
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in ("cat/a.png", "cat/b.png", "dog/c.png"):
    ...     (root / name).parent.mkdir(exist_ok=True)
    ...     Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(root / name)
    >>> data = load_image_folder(root)
    >>> data.images.shape, data.names.tolist(), data.target.tolist()
    ((3, 4, 4, 3), ['cat/a.png', 'cat/b.png', 'dog/c.png'], [0, 0, 1])
    """
    if layout not in ("auto", "classes", "flat"):
        raise CNATValueError(f"layout must be 'auto', 'classes' or 'flat', got {layout!r}.")
    if image_size is not None:
        image_size = _check_int(image_size, "image_size", 1)
    root = Path(path)
    if not root.exists():
        raise InputFileError(f"image folder not found: {root}")
    if not root.is_dir():
        raise InputFileError(f"{root} is not a folder of images")
    top = _image_files(root)
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    per_class = [(d.name, _image_files(d)) for d in subfolders]
    per_class = [(name, files) for name, files in per_class if files]
    if layout == "auto":
        if top and per_class:
            raise InputFileError(f"{root} holds images both at its top level ({top[0].name}, ...) and in subfolders "
                                 f"({per_class[0][0]}/, ...): pass layout='classes' or layout='flat'")
        layout = "classes" if per_class else "flat"
    if layout == "classes":
        if not per_class:
            raise InputFileError(f"{root}: no images in class subfolders (layout='classes')")
        files = [f for _, fs in per_class for f in fs]
        target = np.concatenate([np.full(len(fs), k, dtype=np.int64) for k, (_, fs) in enumerate(per_class)])
        target_names = np.array([name for name, _ in per_class])
    else:
        if not top:
            raise InputFileError(f"{root}: no image files (extensions {', '.join(IMAGE_EXTENSIONS)})")
        files, target, target_names = top, None, None
    images = [_read_image(f, image_size) for f in files]
    shapes = {img.shape for img in images}
    if len(shapes) > 1:
        first = next(f for f, img in zip(files, images) if img.shape != images[0].shape)
        raise InputFileError(f"images of different sizes in {root} ({files[0].name}: {images[0].shape[:2]}, "
                             f"{first.relative_to(root).as_posix()}: "
                             f"{next(img.shape[:2] for f, img in zip(files, images) if f == first)}): pass "
                             f"image_size to resize them")
    return Bunch(
        images=np.stack(images),
        names=np.array([f.relative_to(root).as_posix() for f in files]),
        filenames=np.array([str(f) for f in files]),
        target=target,
        target_names=target_names,
        layout=layout,
    )
