"""Label-free image features: Coates & Ng single-layer k-means patch features.

:class:`KMeansPatchFeatures` learns a dictionary of image patches by k-means
on whitened, contrast-normalised random patches and encodes an image by the
"triangle" activation of every patch position, sum-pooled over the four
quadrants of the image (Coates, Lee & Ng, "An Analysis of Single-Layer
Networks in Unsupervised Feature Learning", AISTATS 2011). Its training never
reads a label, so a head fitted on these features can be certified for the
whole model (certificate scope "model").

The pipeline, for a patch ``x`` (``C * p * p`` pixel values in [0, 1]):

1. contrast normalisation ``x <- (x - mean(x)) / sqrt(var(x) + eps_norm)``;
2. ZCA whitening ``x <- (x - m) @ W`` with ``W = V diag(1 / sqrt(d + eps_zca)) V^T``
   from the eigen-decomposition ``V diag(d) V^T`` of the patch covariance;
3. ``z_k = ||x - c_k||_2`` for the ``K`` centroids, and the triangle activation
   ``f_k = max(0, mean_j z_j - z_k)``;
4. sum of ``f`` over the patch positions of each image quadrant: ``4 K`` features.
"""

import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._compat import Interval, StrOptions
from .exceptions import CNATValueError

__all__ = ["KMeansPatchFeatures"]


# --------------------------------------------------------------------------- math kernels


def _image_view(X):
    """Images as an (n, C, H, W) numpy view (no copy) and whether they are uint8.

    Accepts uint8 or float arrays of shape (n, H, W, C) (channels last, C in 1, 3, 4),
    (n, C, H, W) or grayscale (n, H, W). uint8 pixels are later divided by 255.
    """
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    arr = np.asarray(X)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4:
        raise CNATValueError(f"X must be images of shape (n, H, W, C), (n, C, H, W) or (n, H, W); got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise CNATValueError(f"X must be numeric images, got dtype {arr.dtype}")
    if arr.shape[-1] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4):
        arr = arr.transpose(0, 3, 1, 2)
    if len(arr) == 0:
        raise CNATValueError("X has 0 images; at least one is required")
    return arr, arr.dtype == np.uint8


def _to_tensor(arr, is_uint8):
    """float32 tensor in [0, 1] from a (batch of an) image view."""
    out = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if is_uint8:
        out /= 255.0
    elif not torch.isfinite(out).all():
        raise CNATValueError("X contains NaN or infinity")
    return out


def _normalise_patches(P, eps):
    """Per-patch contrast normalisation of rows of ``P`` (m, d), in place."""
    P -= P.mean(dim=1, keepdim=True)
    P /= torch.sqrt(P.var(dim=1, keepdim=True) + eps)
    return P


def _zca(P, eps):
    """Mean (d,) and ZCA whitening matrix (d, d) of the rows of ``P``."""
    P64 = P.double()
    mean = P64.mean(dim=0)
    cov = torch.cov((P64 - mean).T)
    evals, evecs = torch.linalg.eigh(cov)
    W = evecs @ torch.diag(1.0 / torch.sqrt(evals.clamp(min=0) + eps)) @ evecs.T
    return mean.float(), W.float()


def _assign(P, C, chunk=8192):
    """Index of the nearest centroid (rows of C) for each row of P."""
    c2 = 0.5 * (C * C).sum(dim=1)
    out = torch.empty(len(P), dtype=torch.long)
    for s in range(0, len(P), chunk):
        out[s:s + chunk] = torch.argmax(P[s:s + chunk] @ C.T - c2, dim=1)
    return out


def _kmeans(P, k, n_iter, generator):
    """Lloyd's k-means on the rows of ``P`` (m, d), initialised at random distinct rows.

    A centroid that loses all its points is re-seeded at a random row.
    """
    m = len(P)
    C = P[torch.randperm(m, generator=generator)[:k]].clone()
    for _ in range(n_iter):
        labels = _assign(P, C)
        sums = torch.zeros_like(C).index_add_(0, labels, P)
        counts = torch.bincount(labels, minlength=k).to(P.dtype)
        empty = counts == 0
        C = sums / counts.clamp(min=1)[:, None]
        if empty.any():
            C[empty] = P[torch.randint(0, m, (int(empty.sum()),), generator=generator)]
    return C


def _random_patches(images, is_uint8, n_patches, p, rng):
    """``n_patches`` random p x p patches (m, C * p * p) from an image view (n, C, H, W).

    Rows are flattened in ``torch.nn.functional.unfold``'s (C, p, p) order.
    """
    n, c, h, w = images.shape
    idx = rng.randint(0, n, n_patches)
    rows = rng.randint(0, h - p + 1, n_patches)
    cols = rng.randint(0, w - p + 1, n_patches)
    order = np.argsort(idx, kind="stable")  # read each image once
    out = np.empty((n_patches, c, p, p), dtype=np.float32)
    for j in order:
        out[j] = images[idx[j], :, rows[j]:rows[j] + p, cols[j]:cols[j] + p]
    return _to_tensor(out, is_uint8).reshape(n_patches, -1)


def _encode(images, centroids, mean, W, p, stride, eps_norm, pooling):
    """Triangle-activation features of a batch of images (n, C, H, W) -> (n, n_out).

    Contrast normalisation and whitening are fused into one product:
    ``((x - mean(x)) s - m) W = s (x W) - s mean(x) 1^T W - m W`` with
    ``s = 1 / sqrt(var(x) + eps)``.
    """
    n = images.shape[0]
    # (n, C, h', w', p, p) strided view -> rows in unfold's (C, p, p) order; much faster
    # than torch.nn.functional.unfold on CPU
    view = images.unfold(2, p, stride).unfold(3, p, stride)
    side_h, side_w = view.shape[2], view.shape[3]
    X = view.permute(0, 2, 3, 1, 4, 5).reshape(n * side_h * side_w, -1)
    var, mu_x = torch.var_mean(X, dim=1, keepdim=True)
    s = torch.rsqrt(var.add_(eps_norm))
    XW = X @ W
    XW.mul_(s).sub_((s * mu_x) * W.sum(dim=0)).sub_(mean @ W)
    # z = ||x - c||: squared distances ||c||^2 - 2 x.c + ||x||^2, in place
    Z = torch.addmm((centroids * centroids).sum(dim=1).expand(len(XW), -1), XW, centroids.T, alpha=-2.0)
    Z.add_((XW * XW).sum(dim=1, keepdim=True)).clamp_(min=0.0).sqrt_()
    mu = Z.mean(dim=1, keepdim=True)
    Z.neg_().add_(mu).clamp_(min=0.0)  # max(0, mean_j z_j - z_k)
    Z = Z.reshape(n, side_h, side_w, -1)
    if pooling == "sum":
        return Z.sum(dim=(1, 2))
    h2, w2 = (side_h + 1) // 2, (side_w + 1) // 2
    top, bottom = Z[:, :h2].sum(dim=1), Z[:, h2:].sum(dim=1)
    return torch.cat([top[:, :w2].sum(dim=1), top[:, w2:].sum(dim=1),
                      bottom[:, :w2].sum(dim=1), bottom[:, w2:].sum(dim=1)], dim=1)


# --------------------------------------------------------------------------- transformer


class KMeansPatchFeatures(TransformerMixin, BaseEstimator):
    """Coates-Ng single-layer features: k-means on whitened patches, triangle coding, pooling.

    Unsupervised: ``fit`` reads images only, never labels.

    Parameters
    ----------
    n_centroids : int, default=256
        Dictionary size ``K``. Output has ``4 * K`` features with
        ``pooling="quadrant"`` (``K`` with ``"sum"``).
    patch_size : int, default=6
        Side ``p`` of the square patches.
    stride : int, default=1
        Step between patch positions in ``transform``.
    n_patches : int, default=200_000
        Random patches drawn for whitening and k-means in ``fit``.
    n_iter : int, default=10
        Lloyd iterations.
    whiten : bool, default=True
        ZCA-whiten patches (``False``: centre them only).
    zca_epsilon : float, default=0.1
        Added to the covariance eigenvalues before whitening (Coates & Ng's 0.1 on
        normalised patches).
    norm_epsilon : float, default=10 / 255**2
        Added to each patch's variance in contrast normalisation (Coates & Ng's 10
        for pixels in 0..255, rescaled to pixels in [0, 1]).
    pooling : {"quadrant", "sum"}, default="quadrant"
        Sum over each image quadrant, or over the whole image.
    batch_size : int, default=128
        Images encoded at once in ``transform`` (memory ~ ``batch_size * L * K`` floats,
        ``L`` patch positions per image).
    random_state : int, RandomState instance or None, default=None
        Seeds the patch sample and the k-means initialisation.

    Attributes
    ----------
    centroids_ : ndarray of shape (n_centroids, C * p * p)
        Dictionary, in whitened patch space.
    patch_mean_ : ndarray of shape (C * p * p,)
    whitening_ : ndarray of shape (C * p * p, C * p * p)
    input_shape_ : tuple
        (C, H, W) of the images seen in ``fit``.
    n_features_out_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cnat.features import KMeansPatchFeatures
    >>> X = np.random.RandomState(0).randint(0, 256, size=(20, 12, 12, 3), dtype=np.uint8)
    >>> KMeansPatchFeatures(n_centroids=8, n_patches=500, random_state=0).fit_transform(X).shape
    (20, 32)
    """

    _parameter_constraints = {
        "n_centroids": [Interval(numbers.Integral, 1, None, closed="left")],
        "patch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "stride": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_patches": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_iter": [Interval(numbers.Integral, 0, None, closed="left")],
        "whiten": ["boolean"],
        "zca_epsilon": [Interval(numbers.Real, 0, None, closed="left")],
        "norm_epsilon": [Interval(numbers.Real, 0, None, closed="neither")],
        "pooling": [StrOptions({"quadrant", "sum"})],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, n_centroids=256, *, patch_size=6, stride=1, n_patches=200_000, n_iter=10, whiten=True,
                 zca_epsilon=0.1, norm_epsilon=10 / 255**2, pooling="quadrant", batch_size=128,
                 random_state=None):
        self.n_centroids = n_centroids
        self.patch_size = patch_size
        self.stride = stride
        self.n_patches = n_patches
        self.n_iter = n_iter
        self.whiten = whiten
        self.zca_epsilon = zca_epsilon
        self.norm_epsilon = norm_epsilon
        self.pooling = pooling
        self.batch_size = batch_size
        self.random_state = random_state

    def fit(self, X, y=None):
        """Learn the whitening and the patch dictionary from images ``X`` (labels unused).

        Parameters
        ----------
        X : array-like of shape (n, H, W, C), (n, C, H, W) or (n, H, W)
            uint8 images (scaled to [0, 1]) or float images in [0, 1].
        y : None
            Ignored.

        Returns
        -------
        self
        """
        self._validate_params()
        images, is_uint8 = _image_view(X)
        _, c, h, w = images.shape
        p = self.patch_size
        if p > min(h, w):
            raise CNATValueError(f"patch_size={p} is larger than the images ({h}x{w})")
        if self.n_patches < self.n_centroids:
            raise CNATValueError(f"n_patches={self.n_patches} must be >= n_centroids={self.n_centroids}")
        rng = check_random_state(self.random_state)
        gen = torch.Generator().manual_seed(int(rng.randint(0, 2**31 - 1)))
        P = _normalise_patches(_random_patches(images, is_uint8, self.n_patches, p, rng), self.norm_epsilon)
        if self.whiten:
            mean, W = _zca(P, self.zca_epsilon)
        else:
            mean, W = P.mean(dim=0), torch.eye(P.shape[1])
        P = (P - mean) @ W
        C = _kmeans(P, self.n_centroids, self.n_iter, gen)
        self.centroids_ = C.numpy()
        self.patch_mean_ = mean.numpy()
        self.whitening_ = W.numpy()
        self.input_shape_ = (c, h, w)
        self.n_features_out_ = self.n_centroids * (4 if self.pooling == "quadrant" else 1)
        return self

    def transform(self, X):
        """Encode images as pooled triangle activations.

        Parameters
        ----------
        X : array-like of images, as in ``fit`` and of the same (C, H, W)

        Returns
        -------
        features : ndarray of shape (n, n_features_out_), float32
        """
        check_is_fitted(self, "centroids_")
        images, is_uint8 = _image_view(X)
        if tuple(images.shape[1:]) != self.input_shape_:
            raise CNATValueError(f"X has images of shape {tuple(images.shape[1:])}, but KMeansPatchFeatures was "
                                 f"fitted on {self.input_shape_}")
        C = torch.from_numpy(self.centroids_)
        mean = torch.from_numpy(self.patch_mean_)
        W = torch.from_numpy(self.whitening_)
        out = np.empty((len(images), self.n_features_out_), dtype=np.float32)
        with torch.no_grad():
            for s in range(0, len(images), self.batch_size):
                batch = _to_tensor(images[s:s + self.batch_size], is_uint8)
                out[s:s + self.batch_size] = _encode(batch, C, mean, W, self.patch_size,
                                                     self.stride, self.norm_epsilon, self.pooling).numpy()
        return out

    def get_feature_names_out(self, input_features=None):
        """Names ``kmeans_patch{j}`` for the output columns."""
        check_is_fitted(self, "centroids_")
        return np.asarray([f"kmeans_patch{j}" for j in range(self.n_features_out_)], dtype=object)
