"""Plots following scikit-learn's Display API (matplotlib is an optional extra).

* :class:`CoverageDisplay`: coverage and certified accuracy against the budget
  scale (tier "bounded"), the number of flipped labels (tier "flip") or the
  failure probability delta (tier "stochastic"). One ``certify`` call gives
  the whole curve, because a certificate reports per point the largest scale
  (``radius_scale``), the largest ``m`` (``max_flips``) and the smallest
  delta (``delta_min``) at which it holds.
* :class:`ReliabilityDisplay`: multiclass top-label reliability diagram
  (scikit-learn's ``CalibrationDisplay`` is binary-only).
* :class:`CertifiedAccuracyDisplay`: certified accuracy against the number of
  flipped training labels, several methods (tier-"flip" certificates, e.g. ours
  and the peers of :mod:`sklearn_cnat.peers`) on one axes.

``__init__`` holds computed data; ``plot(ax=None)`` draws and returns self with
``ax_``, ``figure_`` and ``line_``; ``from_estimator`` computes predictions and
calls ``from_certificate`` / ``from_predictions``.
"""

import numpy as np

from .exceptions import CNATValueError

__all__ = ["CertifiedAccuracyDisplay", "CoverageDisplay", "ReliabilityDisplay"]

_X_LABELS = {
    "bounded": "budget scale s (every radius multiplied by s)",
    "flip": "flipped training labels m",
    "stochastic": "failure probability delta",
}


def _plt():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError("plotting needs matplotlib: pip install 'sklearn-cnat[plot]'") from exc
    return plt


def _truth_labels(y_true, classes):
    y = np.asarray(y_true)
    if y.ndim == 2 and y.shape[1] > 1:  # vote matrix: plurality, ties to the lowest index
        return np.asarray(classes)[np.argmax(y, axis=1)]
    return y.ravel()


_TIER_FIELDS = {"bounded": "radius_scale", "flip": "max_flips", "stochastic": "delta_min"}


def _tier_values(cert):
    """Per-point value that decides certification along the x axis of the tier."""
    if cert.tier not in _TIER_FIELDS:
        raise CNATValueError(f"unknown tier {cert.tier!r}")
    field = _TIER_FIELDS[cert.tier]
    values = getattr(cert, field, None)
    if values is None:
        raise CNATValueError(f"this certificate has no {field}; certify with tier={cert.tier!r}")
    return np.asarray(values, dtype=float)


def _coverage_curve(cert, y_true, grid):
    """Coverage and certified accuracy at each grid value.

    A point is certified at scale s iff radius_scale >= s, at m flips iff
    max_flips >= m, at failure probability delta iff delta_min <= delta.
    """
    values = _tier_values(cert)
    if cert.tier == "stochastic":
        holds = values[None, :] <= grid[:, None]
    else:
        holds = values[None, :] >= grid[:, None]
    coverage = holds.mean(axis=1)
    if y_true is None:
        return coverage, None
    correct = np.asarray(cert.prediction) == y_true
    return coverage, (holds & correct[None, :]).mean(axis=1)


def _default_grid(cert):
    values = _tier_values(cert)
    if cert.tier == "bounded":
        finite = values[np.isfinite(values)]
        top = max(2.0, float(np.quantile(finite, 0.95)) if finite.size else 2.0)
        return np.linspace(0.0, top, 41)
    if cert.tier == "flip":
        top = max(1, int(np.quantile(values, 0.95)))
        return np.unique(np.linspace(0, top, min(top + 1, 60)).astype(int))
    return np.logspace(-6, np.log10(0.5), 41)  # delta >= 1 would be vacuous


class CoverageDisplay:
    """Coverage and certified accuracy curves.

    Parameters
    ----------
    x : ndarray of shape (n_points,)
        Budget scales, flip counts or deltas.
    coverage : ndarray of shape (n_points,)
        Fraction of test points certified at each ``x``.
    certified_accuracy : ndarray of shape (n_points,) or None
        Fraction certified and correct at each ``x``.
    tier : str
    estimator_name : str or None

    Examples
    --------
    >>> disp = CoverageDisplay.from_estimator(clf, X_test, y_test, tier="bounded")  # doctest: +SKIP
    >>> CoverageDisplay.from_estimator(other, X_test, y_test, tier="bounded", ax=disp.ax_)  # doctest: +SKIP
    """

    def __init__(self, *, x, coverage, certified_accuracy=None, tier="bounded", estimator_name=None):
        self.x = x
        self.coverage = coverage
        self.certified_accuracy = certified_accuracy
        self.tier = tier
        self.estimator_name = estimator_name

    def plot(self, ax=None, *, name=None, **kwargs):
        """Draw coverage (solid) and certified accuracy (dashed); returns self."""
        plt = _plt()
        if ax is None:
            _, ax = plt.subplots()
        name = name if name is not None else self.estimator_name
        label = "coverage" if name is None else f"{name}: coverage"
        (self.line_,) = ax.plot(self.x, self.coverage, label=label, **kwargs)
        self.accuracy_line_ = None
        if self.certified_accuracy is not None:
            label = "certified accuracy" if name is None else f"{name}: certified accuracy"
            (self.accuracy_line_,) = ax.plot(self.x, self.certified_accuracy, linestyle="--",
                                             color=self.line_.get_color(), label=label)
        if self.tier == "stochastic":
            ax.set_xscale("log")
        ax.set_xlabel(_X_LABELS.get(self.tier, "x"))
        ax.set_ylabel("fraction of test points")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"CNR certificates, tier {self.tier}")
        ax.legend(loc="best", fontsize="small")
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_certificate(cls, certificate, y_true=None, *, classes=None, grid=None, name=None, ax=None,
                         **kwargs):
        """Curves from one certificate (any tier).

        Parameters
        ----------
        certificate : Certificate
        y_true : array-like of shape (n,) or (n, K), optional
            Labels, or votes (plurality) for certified accuracy.
        classes : array-like of shape (K,), optional
            Class label of each vote column; default: the certificate's ``classes``
            when it has them, else ``0..K-1``.
        grid : array-like, optional
            Values of the x axis; a sensible default per tier.
        """
        grid = _default_grid(certificate) if grid is None else np.asarray(grid, dtype=float)
        truth = None
        if y_true is not None:
            if classes is None:
                classes = getattr(certificate, "classes", None)
            if classes is None:
                classes = np.arange(np.shape(y_true)[1]) if np.ndim(y_true) == 2 else None
            truth = _truth_labels(y_true, classes)
        coverage, cert_acc = _coverage_curve(certificate, truth, grid)
        disp = cls(x=grid, coverage=coverage, certified_accuracy=cert_acc, tier=certificate.tier,
                   estimator_name=name)
        return disp.plot(ax=ax, **kwargs)

    @classmethod
    def from_estimator(cls, estimator, X, y=None, *, tier="bounded", m=None, delta=0.05, grid=None,
                       name=None, ax=None, **kwargs):
        """Certify ``X`` with ``estimator.certify`` and plot the curves."""
        cert = estimator.certify(X, tier=tier, m=m, delta=delta)
        name = name if name is not None else type(estimator).__name__
        return cls.from_certificate(cert, y, classes=estimator.classes_, grid=grid, name=name, ax=ax, **kwargs)


class ReliabilityDisplay:
    """Top-label reliability diagram for multiclass probabilities.

    Parameters
    ----------
    confidence : ndarray of shape (n_bins,)
        Mean top-label confidence per non-empty bin.
    accuracy : ndarray of shape (n_bins,)
        Accuracy of the top label per non-empty bin.
    counts : ndarray of shape (n_bins,)
    ece : float
        Expected calibration error (same bins).
    estimator_name : str or None
    """

    def __init__(self, *, confidence, accuracy, counts, ece, estimator_name=None):
        self.confidence = confidence
        self.accuracy = accuracy
        self.counts = counts
        self.ece = ece
        self.estimator_name = estimator_name

    def plot(self, ax=None, *, name=None, **kwargs):
        """Draw the diagram (with the diagonal of perfect calibration); returns self."""
        plt = _plt()
        if ax is None:
            _, ax = plt.subplots()
        name = name if name is not None else self.estimator_name
        label = f"ECE = {self.ece:.3f}" if name is None else f"{name} (ECE = {self.ece:.3f})"
        if not getattr(ax, "_cnat_diagonal", False):  # once per axes when several diagrams share it
            ax.plot([0, 1], [0, 1], linestyle=":", color="gray", label="perfectly calibrated")
            ax._cnat_diagonal = True
        (self.line_,) = ax.plot(self.confidence, self.accuracy, marker="o", label=label, **kwargs)
        ax.set_xlabel("mean top-label confidence")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title("Reliability diagram")
        ax.legend(loc="upper left", fontsize="small")
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_predictions(cls, y_true, y_prob, *, n_bins=15, classes=None, name=None, ax=None, **kwargs):
        """Diagram from labels (or votes: plurality) and probabilities (n, K)."""
        from .metrics._classification import _top_label_bins

        y_prob = np.asarray(y_prob, dtype=float)
        classes = np.arange(y_prob.shape[1]) if classes is None else np.asarray(classes)
        truth = _truth_labels(y_true, classes)
        index = {c: i for i, c in enumerate(classes.tolist())}
        truth_idx = np.array([index[c] for c in truth.tolist()])
        weight, conf_sum, correct_sum = _top_label_bins(None, truth_idx, y_prob, None, n_bins, "uniform", False)
        keep = weight > 0
        mean_conf = conf_sum[keep] / weight[keep]
        mean_acc = correct_sum[keep] / weight[keep]
        ece = float(np.abs(correct_sum - conf_sum).sum() / weight.sum())  # the ECE of these bins
        counts = weight
        disp = cls(confidence=mean_conf, accuracy=mean_acc, counts=counts[keep], ece=ece, estimator_name=name)
        return disp.plot(ax=ax, **kwargs)

    @classmethod
    def from_estimator(cls, estimator, X, y, *, n_bins=15, name=None, ax=None, **kwargs):
        """Diagram of ``estimator.predict_proba(X)`` against ``y`` (labels or votes)."""
        name = name if name is not None else type(estimator).__name__
        return cls.from_predictions(y, estimator.predict_proba(X), n_bins=n_bins,
                                    classes=estimator.classes_, name=name, ax=ax, **kwargs)


def _flip_grid(certificates):
    """0, then about 60 log-spaced flip counts up to the largest ``max_flips`` seen."""
    top = max([1] + [int(np.max(c.max_flips)) for c in certificates if len(c.max_flips)])
    return np.unique(np.concatenate([[0], np.round(np.logspace(0, np.log10(top + 1), 60)).astype(int)]))


class CertifiedAccuracyDisplay:
    """Certified accuracy against the number of flipped training labels, one curve per method.

    A point counts at ``m`` when it is correctly predicted and its certificate holds for
    ``m`` flipped labels (``max_flips >= m``); at ``m = 0`` the curve starts at (at most)
    the clean accuracy.

    Parameters
    ----------
    m : ndarray of shape (n_grid,)
        Numbers of flipped labels.
    certified_accuracy : dict of str to ndarray of shape (n_grid,)
        Certified accuracy of each method at each ``m``.
    clean_accuracy : dict of str to float or None
        Clean accuracy of each method (drawn in the legend).

    Examples
    --------
    >>> disp = CertifiedAccuracyDisplay.from_certificates(
    ...     {"ours": cert_ours, "kNN": cert_knn}, y_test)  # doctest: +SKIP
    >>> disp.figure_.savefig("certified_accuracy.png")  # doctest: +SKIP
    """

    def __init__(self, *, m, certified_accuracy, clean_accuracy=None):
        self.m = m
        self.certified_accuracy = certified_accuracy
        self.clean_accuracy = clean_accuracy

    def plot(self, ax=None, *, title=None, emphasis=None, **kwargs):
        """Draw one line per method (x axis symmetric-log in ``m``); returns self.

        Lines get distinct colour / dash pairs; the methods named in ``emphasis`` (default:
        names starting with "ours") are drawn thicker. ``lines_`` maps each method's name
        to its line.
        """
        plt = _plt()
        if ax is None:
            _, ax = plt.subplots(figsize=(9, 5))
        if emphasis is None:
            emphasis = [name for name in self.certified_accuracy if str(name).startswith("ours")]
        colours = plt.get_cmap("tab20").colors
        dashes = ["-", "--", "-.", ":"]
        self.lines_ = {}
        for i, (name, values) in enumerate(self.certified_accuracy.items()):
            label = name
            if self.clean_accuracy and name in self.clean_accuracy:
                label = f"{name} (clean {100 * self.clean_accuracy[name]:.1f} %)"
            style = dict(color=colours[(2 * i) % 20 + (i // 10) % 2], linestyle=dashes[i % 4],
                         linewidth=2.6 if name in emphasis else 1.3)
            style.update(kwargs)
            (self.lines_[name],) = ax.plot(self.m, values, label=label, **style)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("flipped training labels m")
        ax.set_ylabel("certified accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title or "Certified accuracy against label flips")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="x-small")
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_certificates(cls, certificates, y_true, *, grid=None, ax=None, title=None, emphasis=None, **kwargs):
        """Curves from tier-"flip" certificates of several methods on the same test points.

        Parameters
        ----------
        certificates : dict of str to Certificate
            One certificate per method (each with ``max_flips``).
        y_true : array-like of shape (n_points,)
            True class labels (votes: plurality).
        grid : array-like of int, optional
            Values of ``m``; default 0 and about 60 log-spaced values up to the largest
            ``max_flips``.
        """
        certificates = dict(certificates)
        for name, cert in certificates.items():
            if getattr(cert, "max_flips", None) is None:
                raise CNATValueError(f"certificate {name!r} has no max_flips; certify with tier='flip'")
        grid = _flip_grid(certificates.values()) if grid is None else np.asarray(grid)
        curves, clean = {}, {}
        for name, cert in certificates.items():
            truth = _truth_labels(y_true, getattr(cert, "classes", None) if np.ndim(y_true) == 2 else None)
            correct = np.asarray(cert.prediction) == truth
            flips = np.asarray(cert.max_flips)
            curves[name] = ((flips[None, :] >= grid[:, None]) & correct[None, :]).mean(axis=1)
            clean[name] = float(correct.mean())
        disp = cls(m=grid, certified_accuracy=curves, clean_accuracy=clean)
        return disp.plot(ax=ax, title=title, emphasis=emphasis, **kwargs)
