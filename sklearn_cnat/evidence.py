"""Label evidence read once: vote counts, item names, annotator ids and classes.

:func:`read_evidence` is the one door through which label evidence enters the
package, for the Python API and for ``cnat run`` alike. It reads

- vote counts ``(n, K)`` (one column per class);
- annotator label matrices ``(n, A)`` (one column per annotator, blank/NaN/None/-1
  for "not labelled");
- single labels ``(n,)``;
- long format, one row per vote ``(item, annotator, label)``, as crowd platforms and
  crowd-kit export it;

from an array, a pandas DataFrame or a ``.csv``/``.tsv``/``.txt``/``.npy`` file, with
class names or integers, and returns one canonical :class:`LabelEvidence`: the counts,
the item names (when the source has them), the annotator ids (when it has them), the
classes and the individual votes. Everything downstream reads only that record.

Item names are the key: :meth:`LabelEvidence.align` orders the evidence like a list of
names (e.g. image files) and refuses, naming the first unmatched items, when the names
do not match. The reading rules (``evidence="auto"``) never change meaning on a single
odd value; they are listed in :func:`read_evidence` and ``docs/budgets.md``.
"""

import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .exceptions import InputFileError, NoiseBudgetError

__all__ = ["LabelEvidence", "read_evidence", "ITEM_COLUMNS", "ANNOTATOR_COLUMNS", "LABEL_COLUMNS"]

#: Column names (case-insensitive) recognised as the item of a vote.
ITEM_COLUMNS = ("item", "task", "image", "file", "filename", "file_name", "path", "image_id", "item_id",
                "task_id", "name")
#: Column names (case-insensitive) recognised as the annotator of a vote.
ANNOTATOR_COLUMNS = ("annotator", "worker", "annotator_id", "worker_id", "rater", "labeler", "labeller", "user")
#: Column names (case-insensitive) recognised as the label of a vote.
LABEL_COLUMNS = ("label", "class", "answer", "response", "vote")

_KINDS = ("auto", "counts", "annotators", "labels", "long")
_FILE_SUFFIXES = (".csv", ".tsv", ".txt", ".npy")
_ANNOTATOR_NAME = re.compile(r"annotator|worker|rater|label+er", re.IGNORECASE)


# --------------------------------------------------------------------------- value kernels


def _missing_mask(arr):
    """NaN, None or -1 entries of an annotator matrix."""
    if np.issubdtype(arr.dtype, np.number):
        return np.isnan(arr.astype(np.float64)) | (arr == -1)
    import pandas as pd

    return np.asarray(pd.isna(arr), dtype=bool) | np.asarray(arr == -1, dtype=bool)


def _as_label_values(values, what):
    """Validate numeric label values (finite) and return them as an array."""
    values = np.asarray(values)
    if values.dtype.kind in "fc" and not np.all(np.isfinite(values)):
        raise NoiseBudgetError(f"{what} contain NaN or infinite values")
    if values.dtype.kind == "O":
        import pandas as pd

        if np.any(pd.isna(values)):
            raise NoiseBudgetError(f"{what} contain missing values (NaN/None)")
    return values


def _tidy_classes(values):
    """Sorted unique labels; integral floats become int64 (so ``2.0`` is reported as ``2``)."""
    try:
        classes = np.unique(values)
    except TypeError:
        kinds = sorted({type(v).__name__ for v in np.asarray(values, dtype=object).ravel()})
        raise NoiseBudgetError(f"labels mix types ({', '.join(kinds)}); use one type for all class labels, "
                               f"e.g. all names or all integers") from None
    if classes.dtype.kind == "f" and classes.size and np.all(classes == np.round(classes)):
        classes = classes.astype(np.int64)
    return classes


def _encode(values, classes, what):
    """Class indices of ``values``; a NoiseBudgetError names labels not in ``classes``."""
    lookup = {c: i for i, c in enumerate(np.asarray(classes).tolist())}
    flat = np.asarray(values).ravel().tolist()
    idx = np.fromiter((lookup.get(v, -1) for v in flat), dtype=np.intp, count=len(flat))
    if np.any(idx < 0):
        bad = sorted({repr(v) for v, i in zip(flat, idx) if i < 0})[:5]
        raise NoiseBudgetError(f"{what} contain labels outside the classes {np.asarray(classes).tolist()}: "
                               f"{', '.join(bad)}; pass the full class list as `classes`")
    return idx.reshape(np.shape(values))


def _onehot_counts(idx, k):
    counts = np.zeros((len(idx), k))
    counts[np.arange(len(idx)), idx] = 1.0
    return counts


def _annotator_counts(idx, missing, k):
    """Vote counts from an encoded annotator matrix (``idx`` ignored where ``missing``)."""
    n = idx.shape[0]
    counts = np.zeros((n, k))
    rows = np.broadcast_to(np.arange(n)[:, None], idx.shape)
    np.add.at(counts, (rows[~missing], idx[~missing]), 1.0)
    return counts


def _check_votes_present(counts):
    empty = np.flatnonzero(counts.sum(axis=1) == 0)
    if empty.size:
        raise NoiseBudgetError(f"{empty.size} rows have zero votes (e.g. row {empty[0]}); every example needs "
                               f"at least one label")


def _read_counts(X):
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise NoiseBudgetError("vote counts must be numeric") from None
    if arr.ndim != 2:
        raise NoiseBudgetError(f"vote counts must be 2-D (n_samples, n_classes), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise NoiseBudgetError("vote counts contain NaN or infinite values")
    if np.any(arr < 0):
        raise NoiseBudgetError("vote counts must be non-negative; got negative counts (an annotator matrix "
                               "uses -1 for missing: pass evidence='annotators')")
    if np.any(arr != np.round(arr)):
        raise NoiseBudgetError("vote counts must be integers (integral floats such as 2.0 are accepted); got "
                               "non-integer counts")
    _check_votes_present(arr)
    return arr


def _read_labels(X):
    arr = np.asarray(X)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise NoiseBudgetError(f"labels must be 1-D (or of shape (n, 1)), got shape {arr.shape}")
    return _as_label_values(arr, "labels")


def _read_annotators(X):
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise NoiseBudgetError(f"an annotator label matrix must be 2-D (n_samples, n_annotators), "
                               f"got shape {arr.shape}")
    missing = _missing_mask(arr)
    if arr.dtype.kind in "fc" and np.any(np.isinf(arr)):
        raise NoiseBudgetError("the annotator label matrix contains infinite values")
    empty = np.flatnonzero(missing.all(axis=1))
    if empty.size:
        raise NoiseBudgetError(f"{empty.size} rows have zero votes (no annotator labelled them, e.g. row "
                               f"{empty[0]}); every example needs at least one label")
    return arr, missing


def _numeric_view(arr):
    """``arr`` as float64 (None -> NaN) if every entry is a number or missing, else None."""
    if np.issubdtype(arr.dtype, np.number) or arr.dtype == bool:
        return arr.astype(np.float64)
    if arr.dtype.kind != "O":
        return None
    out = np.empty(arr.shape, dtype=np.float64)
    for pos, v in np.ndenumerate(arr):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out[pos] = np.nan
        elif isinstance(v, (numbers.Real, np.bool_)) and not isinstance(v, str):
            out[pos] = float(v)
        else:
            return None
    return out


def _resolve_kind(X, evidence="auto", *, source="label evidence"):
    """The evidence kind of an array ``X`` under ``evidence`` (see :func:`read_evidence`)."""
    if evidence != "auto":
        return evidence
    arr = np.asarray(X)
    if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1):
        return "labels"
    if arr.ndim != 2:
        raise NoiseBudgetError(f"label evidence must be 1-D or 2-D, got an array of shape {arr.shape}")
    numeric = _numeric_view(arr)
    if numeric is None:
        return "annotators"
    odd = np.isnan(numeric) | (numeric == -1)
    if odd.any():
        i, j = (int(v) for v in np.argwhere(odd)[0])
        what = "NaN/blank" if np.isnan(numeric[i, j]) else "-1"
        raise NoiseBudgetError(
            f"{source} of shape {arr.shape} is ambiguous under evidence='auto': read as vote counts (one "
            f"column per class) it holds {int(odd.sum())} missing or -1 entries (first at row {i}, column {j}: "
            f"{what}), which counts cannot hold; read as an annotator label matrix (one column per annotator) "
            f"they mark labels not given. Pass evidence='annotators' if the columns are annotators, or repair "
            f"the counts and pass evidence='counts'")
    return "counts"


# --------------------------------------------------------------------------- the record


def _frozen(arr):
    if arr is not None:
        arr = np.array(arr, copy=True)
        arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False, repr=False)
class LabelEvidence:
    """Label evidence in one canonical form, as :func:`read_evidence` returns it.

    Parameters
    ----------
    counts : ndarray of shape (n_items, n_classes)
        Vote counts, non-negative integers (as float64), at least one vote per item;
        column ``k`` is ``classes[k]``.
    classes : ndarray of shape (n_classes,)
        Class labels in column order.
    items : ndarray of shape (n_items,) or None
        Item names (e.g. image file names), unique; None when the source has none.
    annotators : ndarray of shape (n_annotators,) or None
        Annotator ids; None when the source has no annotator identities (counts,
        single labels).
    votes : ndarray of int of shape (n_votes, 3) or None
        One row per vote: item index, annotator index, class index. None without
        annotator identities.
    kind : {"counts", "annotators", "labels", "long"}
        The format the evidence was read from.
    source : str
        Where it came from (a file name, "DataFrame", "array"), used in messages.

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn_cnat.evidence import read_evidence
    >>> long = pd.DataFrame({"image": ["b.png", "a.png", "a.png"], "worker": ["w1", "w1", "w2"],
    ...                      "label": ["cat", "dog", "dog"]})
    >>> ev = read_evidence(long)
    >>> ev
    LabelEvidence(kind='long', n_items=2, n_classes=2, n_annotators=2, n_votes=3, source='DataFrame')
    >>> ev.align(["a.png", "b.png"]).counts.tolist()
    [[0.0, 2.0], [1.0, 0.0]]
    """

    counts: np.ndarray
    classes: np.ndarray
    items: np.ndarray = None
    annotators: np.ndarray = None
    votes: np.ndarray = None
    kind: str = "counts"
    source: str = "label evidence"

    def __post_init__(self):
        counts = np.asarray(self.counts, dtype=np.float64)
        if counts.ndim != 2:
            raise NoiseBudgetError(f"LabelEvidence.counts must be 2-D, got shape {counts.shape}")
        n, k = counts.shape
        classes = np.asarray(self.classes)
        if classes.shape != (k,):
            raise NoiseBudgetError(f"LabelEvidence.classes must have shape ({k},), got {classes.shape}")
        set_ = object.__setattr__
        set_(self, "counts", _frozen(counts))
        set_(self, "classes", _frozen(classes))
        if self.items is not None:
            items = np.asarray(self.items, dtype=object)
            if items.shape != (n,):
                raise NoiseBudgetError(f"LabelEvidence.items must have shape ({n},), got {items.shape}")
            set_(self, "items", _frozen(items))
        if self.annotators is not None:
            set_(self, "annotators", _frozen(np.asarray(self.annotators, dtype=object)))
        if self.votes is not None:
            votes = np.asarray(self.votes, dtype=np.intp).reshape(-1, 3)
            set_(self, "votes", _frozen(votes))

    def __len__(self):
        return self.counts.shape[0]

    def __repr__(self):
        parts = [f"kind={self.kind!r}", f"n_items={len(self)}", f"n_classes={self.n_classes}"]
        if self.annotators is not None:
            parts.append(f"n_annotators={len(self.annotators)}")
        if self.votes is not None:
            parts.append(f"n_votes={len(self.votes)}")
        parts.append(f"source={self.source!r}")
        return f"LabelEvidence({', '.join(parts)})"

    @property
    def n_classes(self):
        """Number of classes ``K``."""
        return self.counts.shape[1]

    @property
    def plurality(self):
        """Plurality class index per item (ties to the lowest index), shape (n_items,)."""
        return np.argmax(self.counts, axis=1)

    def _replace(self, **changes):
        fields = dict(counts=self.counts, classes=self.classes, items=self.items, annotators=self.annotators,
                      votes=self.votes, kind=self.kind, source=self.source)
        fields.update(changes)
        return LabelEvidence(**fields)

    def take(self, indices):
        """The evidence of the items at ``indices`` (integer positions), in that order.

        Parameters
        ----------
        indices : array-like of int of shape (n_selected,)

        Returns
        -------
        LabelEvidence
        """
        indices = np.asarray(indices, dtype=np.intp).reshape(-1)
        votes = None
        if self.votes is not None:
            new_pos = np.full(len(self), -1, dtype=np.intp)
            new_pos[indices] = np.arange(len(indices))
            keep = new_pos[self.votes[:, 0]] >= 0
            votes = self.votes[keep].copy()
            votes[:, 0] = new_pos[votes[:, 0]]
            votes = votes[np.argsort(votes[:, 0], kind="stable")]
        return self._replace(counts=self.counts[indices], items=None if self.items is None else self.items[indices],
                             votes=votes)

    def align(self, names, *, what="names"):
        """The evidence reordered to follow ``names`` (one item per name).

        Names are compared as text, first in full (as POSIX paths, a leading ``./``
        dropped), then by file name (``cat/001.png`` -> ``001.png``), then by stem
        (``001``), each only when it identifies every item on both sides uniquely. The
        first rule under which the two sides name exactly the same items is used;
        nothing is matched by position.

        Parameters
        ----------
        names : array-like of str of shape (n,)
            The order to follow, e.g. the ``names`` of :func:`~sklearn_cnat.datasets.load_image_folder`.
        what : str, default="names"
            What the names are (used in messages, e.g. ``"images in imgs/"``).

        Returns
        -------
        LabelEvidence
            With ``items`` equal to ``names`` as given.

        Raises
        ------
        NoiseBudgetError
            If the evidence has no item names, or if names are missing on either side; the
            message gives the counts and the first unmatched names of each side.
        """
        names = [str(v) for v in np.asarray(names, dtype=object).ravel()]
        if self.items is None:
            raise NoiseBudgetError(f"{self.source} has no item names to match to the {len(names)} {what}: add a "
                                   f"column naming each item (one of {', '.join(ITEM_COLUMNS[:5])})")
        if len(set(names)) != len(names):
            dup = next(v for v in names if names.count(v) > 1)
            raise NoiseBudgetError(f"the {what} contain the name {dup!r} more than once")
        items = [str(v) for v in self.items]
        best = None
        for key in (_full_key, _file_key, _stem_key):
            left, right = [key(v) for v in names], [key(v) for v in items]
            if len(set(left)) != len(left) or len(set(right)) != len(right):
                continue
            position = {k: i for i, k in enumerate(right)}
            if set(left) == set(right):
                return self.take([position[k] for k in left])._replace(items=np.asarray(names, dtype=object))
            matched = len(set(left) & set(right))
            if best is None or matched > best[0]:
                best = (matched, left, right, names, items)
        if best is None:
            raise NoiseBudgetError(f"the item names of {self.source} and the {what} cannot be matched uniquely")
        matched, left, right, names, items = best
        left_set, right_set = set(left), set(right)
        no_votes = [n for n, k in zip(names, left) if k not in right_set]
        no_item = [n for n, k in zip(items, right) if k not in left_set]
        msg = [f"the item names of {self.source} do not match the {what} ({matched} matched)"]
        if no_votes:
            msg.append(f"{len(no_votes)} of the {len(names)} {what} have no votes (first: {_first(no_votes)})")
        if no_item:
            msg.append(f"{len(no_item)} of the {len(items)} items in {self.source} are not among the {what} "
                       f"(first: {_first(no_item)})")
        raise NoiseBudgetError("; ".join(msg))

    def to_classes(self, classes):
        """The evidence over the class list ``classes`` (a superset of its own, any order).

        Each own class is found in ``classes`` by value, or else by its text (so labels
        read from a CSV as ``"3"`` or ``"cat"`` find the class ``3`` or ``"cat"``).

        Parameters
        ----------
        classes : array-like of shape (n_classes_new,)

        Returns
        -------
        LabelEvidence

        Raises
        ------
        NoiseBudgetError
            Naming the labels that are not in ``classes``.
        """
        classes = np.asarray(classes)
        if classes.ndim != 1 or classes.size == 0 or len(set(classes.tolist())) != classes.size:
            raise NoiseBudgetError(f"classes must be a non-empty 1-D list without duplicates, got {classes!r}")
        exact = {c: i for i, c in enumerate(classes.tolist())}
        text = {str(c): i for i, c in enumerate(classes.tolist())}
        mapping = np.empty(self.n_classes, dtype=np.intp)
        unknown = []
        for j, c in enumerate(self.classes.tolist()):
            i = exact.get(c, text.get(str(c)))
            if i is None:
                unknown.append(c)
            else:
                mapping[j] = i
        if unknown:
            raise NoiseBudgetError(f"{self.source} has labels outside the classes {classes.tolist()}: "
                                   f"{_first(unknown)}")
        if len(set(mapping.tolist())) != len(mapping):
            raise NoiseBudgetError(f"two labels of {self.source} ({self.classes.tolist()}) name the same class of "
                                   f"{classes.tolist()}")
        counts = np.zeros((len(self), len(classes)))
        counts[:, mapping] = self.counts
        votes = None
        if self.votes is not None:
            votes = self.votes.copy()
            votes[:, 2] = mapping[votes[:, 2]]
        return self._replace(counts=counts, classes=classes, votes=votes)

    def annotator_matrix(self):
        """``(idx, missing)``: the votes as an (n_items, n_annotators) matrix of class indices.

        Raises
        ------
        NoiseBudgetError
            Without annotator identities.
        """
        if self.votes is None:
            raise NoiseBudgetError(f"{self.source} ({self.kind}) carries no annotator identities")
        idx = np.zeros((len(self), len(self.annotators)), dtype=np.intp)
        missing = np.ones_like(idx, dtype=bool)
        idx[self.votes[:, 0], self.votes[:, 1]] = self.votes[:, 2]
        missing[self.votes[:, 0], self.votes[:, 1]] = False
        return idx, missing

    def to_frame(self):
        """The votes in long format, crowd-kit's ``DataFrame[task, worker, label]``.

        ``task`` is the item name (its position when there are no names), ``worker`` the
        annotator id, ``label`` the class label.

        Returns
        -------
        pandas.DataFrame of shape (n_votes, 3)
        """
        import pandas as pd

        if self.votes is None:
            raise NoiseBudgetError(f"{self.source} ({self.kind}) carries no annotator identities, so it has no "
                                   "long format")
        tasks = np.arange(len(self)) if self.items is None else self.items
        return pd.DataFrame({"task": np.asarray(tasks, dtype=object)[self.votes[:, 0]],
                             "worker": self.annotators[self.votes[:, 1]],
                             "label": self.classes[self.votes[:, 2]]})


def _first(values, k=3):
    shown = ", ".join(repr(v) for v in list(values)[:k])
    return shown + (", ..." if len(values) > k else "")


def _full_key(name):
    text = str(name).strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def _file_key(name):
    return PurePosixPath(_full_key(name)).name


def _stem_key(name):
    return PurePosixPath(_full_key(name)).stem


# --------------------------------------------------------------------------- reading


def read_evidence(source, evidence="auto", *, classes=None, item_column=None, annotator_column=None,
                  label_column=None):
    """Read label evidence into one :class:`LabelEvidence`.

    Parameters
    ----------
    source : array-like, pandas.DataFrame, LabelEvidence, str or path-like
        The evidence, or a ``.csv``/``.tsv``/``.txt`` (comma/tab separated) or ``.npy``
        file holding it. A CSV's first row is a header when any of its cells is not a
        number; long format needs the header.
    evidence : {"auto", "counts", "annotators", "labels", "long"}, default="auto"
        How to read ``source``. ``"auto"`` decides by structure, never by a single value:

        - a table with an item, an annotator and a label column (found by name: see
          ``ITEM_COLUMNS``, ``ANNOTATOR_COLUMNS``, ``LABEL_COLUMNS``, or given as
          ``item_column=`` etc.) -> long format;
        - 1-D, or one column -> labels;
        - 2-D with a non-numeric entry (class names) -> annotator matrix;
        - 2-D numeric without missing entries -> vote counts (a complete annotator
          matrix of integers looks the same: pass ``evidence="annotators"``);
        - 2-D numeric with a blank, NaN or -1, or a table whose column names say
          "annotator"/"worker" -> refused: counts cannot hold those, so the matrix is
          either broken counts or annotator labels, and the message asks for
          ``evidence=``.
    classes : array-like of shape (n_classes,), default=None
        The class list, in column order. Counts must have that many columns (a table
        whose column names are the classes is reordered by name); labels must be among
        them (classes without votes are kept). None: the sorted labels seen, or the
        column names / ``arange(K)`` for counts.
    item_column, annotator_column, label_column : str, default=None
        Column names of a table, when they are not among the recognised names. In a
        wide table the item column holds item names; a DataFrame's non-numeric index is
        used as item names when there is no item column.

    Returns
    -------
    LabelEvidence

    Raises
    ------
    InputFileError
        A missing, empty, unreadable or unsupported file (the message names it).
    NoiseBudgetError
        Evidence that cannot be read unambiguously or is invalid (the message says what
        and how to fix it).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cnat.evidence import read_evidence
    >>> read_evidence(np.array([[2, 0], [1, 1]])).counts.tolist()
    [[2.0, 0.0], [1.0, 1.0]]
    >>> ev = read_evidence([["cat", None], ["dog", "dog"]])
    >>> ev.kind, ev.classes.tolist(), ev.counts.tolist()
    ('annotators', ['cat', 'dog'], [[1.0, 0.0], [0.0, 2.0]])
    """
    if evidence not in _KINDS:
        raise NoiseBudgetError(f"evidence must be one of {_KINDS}, got {evidence!r}")
    opts = dict(classes=classes, item_column=item_column, annotator_column=annotator_column,
                label_column=label_column)
    if isinstance(source, LabelEvidence):
        if evidence not in ("auto", source.kind):
            raise NoiseBudgetError(f"evidence={evidence!r} but the LabelEvidence was read as {source.kind!r}")
        return source if classes is None else source.to_classes(classes)
    if isinstance(source, (str, os.PathLike)):
        return _read_file(Path(source), evidence, **opts)
    if isinstance(source, dict) or (hasattr(source, "columns") and "consensus_label" in source.columns):
        raise NoiseBudgetError("cleanlab's multiannotator output is already scored, not raw label evidence: pass "
                               "it to NoiseBudgetTransformer (evidence='multiannotator')")
    if hasattr(source, "columns") and hasattr(source, "iloc"):
        return _from_frame(source, evidence, source_name="DataFrame", **opts)
    if any(v is not None for v in (item_column, annotator_column, label_column)):
        raise NoiseBudgetError("item_column, annotator_column and label_column name columns of a table; the "
                               "evidence given is an array")
    return _from_array(np.asarray(source), evidence, classes=classes, source_name="label evidence")


def _read_file(path, evidence, **opts):
    if not path.exists():
        raise InputFileError(f"votes file not found: {path}")
    if path.is_dir():
        raise InputFileError(f"{path} is a folder; votes must be a .csv, .tsv, .txt or .npy file")
    suffix = path.suffix.lower()
    if suffix not in _FILE_SUFFIXES:
        raise InputFileError(f"{path.name}: votes must be a .csv, .tsv, .txt or .npy file, got {suffix or 'no'} "
                             f"suffix")
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputFileError(f"{path}: not a readable .npy array ({exc})") from None
        if any(opts[k] is not None for k in ("item_column", "annotator_column", "label_column")):
            raise InputFileError(f"{path}: a .npy array has no named columns")
        return _from_array(arr, evidence, classes=opts["classes"], source_name=path.name)
    return _from_frame(_read_table(path), evidence, source_name=path.name, **opts)


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _read_table(path):
    """A CSV/TSV as a DataFrame of text cells (blank -> None), header detected."""
    import pandas as pd

    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        raw = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, sep=sep, skipinitialspace=True,
                          skip_blank_lines=True, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise InputFileError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as exc:
        raise InputFileError(f"{path}: not a valid {'TSV' if sep == chr(9) else 'CSV'} file "
                             f"({str(exc).strip()})") from None
    except UnicodeDecodeError:
        raise InputFileError(f"{path}: not a UTF-8 text file") from None
    raw = raw.apply(lambda col: col.str.strip())
    first = raw.iloc[0].tolist()
    header = any(c and not _is_number(c) for c in first)
    if header:
        names = [c if c else f"column {j + 1}" for j, c in enumerate(first)]
        if len(set(names)) != len(names):
            dup = next(c for c in names if names.count(c) > 1)
            raise InputFileError(f"{path}: the header names the column {dup!r} twice")
        table = raw.iloc[1:].reset_index(drop=True)
        table.columns = names
    else:
        table = raw
        table.columns = pd.RangeIndex(raw.shape[1])
    if table.shape[0] == 0:
        raise InputFileError(f"{path}: the file has a header but no rows")
    table = table.replace("", None)
    table.attrs["header"] = header
    table.attrs["first_line"] = 2 if header else 1
    return table


def _find_column(columns, explicit, known, what, source_name):
    if explicit is not None:
        if explicit not in list(columns):
            raise NoiseBudgetError(f"{source_name} has no column {explicit!r} ({what}_column); its columns are "
                                   f"{[str(c) for c in columns]}")
        return explicit
    lowered = {str(c).strip().lower(): c for c in columns}
    for name in known:
        if name in lowered:
            return lowered[name]
    return None


def _coerce(values):
    """Text cells -> numbers when every non-missing cell is a number (ints when integral)."""
    values = np.asarray(values, dtype=object)
    present = [v for v in values.ravel() if v is not None and not (isinstance(v, float) and np.isnan(v))]
    if not present or not all(isinstance(v, str) for v in present):
        return values
    if not all(_is_number(v) for v in present):
        return values
    out = np.array([np.nan if (v is None or (isinstance(v, float) and np.isnan(v))) else float(v)
                    for v in values.ravel()]).reshape(values.shape)
    return out


def _from_frame(df, evidence, *, source_name, classes=None, item_column=None, annotator_column=None,
                label_column=None):
    import pandas as pd

    columns = list(df.columns)
    item = _find_column(columns, item_column, ITEM_COLUMNS, "item", source_name)
    annot = _find_column(columns, annotator_column, ANNOTATOR_COLUMNS, "annotator", source_name)
    label = _find_column(columns, label_column, LABEL_COLUMNS, "label", source_name)
    first_line = df.attrs.get("first_line")
    from_file = first_line is not None
    if evidence == "long" or (evidence == "auto" and None not in (item, annot, label)):
        lacking = [w for w, c in (("item", item), ("annotator", annot), ("label", label)) if c is None]
        if lacking:
            raise NoiseBudgetError(
                f"{source_name} is read as long format (one row per vote) but has no {' and no '.join(lacking)} "
                f"column; its columns are {[str(c) for c in columns]}; name them (item: {ITEM_COLUMNS[:4]}, "
                f"annotator: {ANNOTATOR_COLUMNS[:2]}, label: {LABEL_COLUMNS[:2]}) or pass item_column=, "
                f"annotator_column=, label_column=")
        return _from_long(df[item].to_numpy(dtype=object), df[annot].to_numpy(dtype=object),
                          df[label].to_numpy(dtype=object), classes=classes, source_name=source_name,
                          first_line=first_line, coerce=from_file)
    items = None
    data_columns = columns
    if item is not None:
        items = df[item].to_numpy(dtype=object)
        data_columns = [c for c in columns if c != item]
        missing = [i for i, v in enumerate(items) if v is None or (isinstance(v, float) and np.isnan(v))]
        if missing:
            raise NoiseBudgetError(f"{source_name}: item column {item!r} is blank in {_row(missing[0], first_line)}")
    elif not from_file and not isinstance(df.index, pd.RangeIndex) and df.index.dtype == object:
        items = df.index.to_numpy(dtype=object)
    if items is not None:
        items = np.asarray([str(v) if from_file else v for v in items], dtype=object)
        _check_unique_items(items, source_name, first_line)
    if not data_columns:
        raise NoiseBudgetError(f"{source_name} has an item column but no vote columns")
    values = df[data_columns].to_numpy(dtype=object)
    if from_file:
        values = _coerce(values)
    elif all(pd.api.types.is_numeric_dtype(df[c]) for c in data_columns):
        values = df[data_columns].to_numpy(dtype=np.float64)
    header = df.attrs.get("header", True)
    named = header and not all(isinstance(c, numbers.Integral) for c in data_columns)
    if evidence == "auto" and named and len(data_columns) > 1:
        said = [str(c) for c in data_columns if _ANNOTATOR_NAME.search(str(c))]
        if said and _numeric_view(np.asarray(values)) is not None:
            raise NoiseBudgetError(
                f"{source_name}: the columns {said[:3]} are named like annotators, and numbers there could be "
                f"class labels (an annotator matrix) or vote counts: pass evidence='annotators' (one column per "
                f"annotator) or evidence='counts' (one column per class)")
    kind = _resolve_kind(values, evidence, source=source_name)
    if kind == "long":
        raise NoiseBudgetError(f"{source_name}: evidence='long' needs item, annotator and label columns")
    if kind == "counts":
        values, col_classes = _order_count_columns(values, data_columns, named, classes, source_name)
        return _from_array(values, "counts", classes=col_classes, items=items, source_name=source_name)
    annotators = np.asarray([str(c) for c in data_columns], dtype=object) if named else None
    return _from_array(values, kind, classes=classes, items=items, annotators=annotators, source_name=source_name)


def _row(i, first_line):
    return f"line {i + first_line}" if first_line is not None else f"row {i}"


def _check_unique_items(items, source_name, first_line):
    seen = {}
    for i, v in enumerate(items):
        if v in seen:
            raise NoiseBudgetError(f"{source_name}: item {v!r} appears twice ({_row(seen[v], first_line)} and "
                                   f"{_row(i, first_line)}); one row per item in this format (long format lists "
                                   f"one row per vote)")
        seen[v] = i


def _order_count_columns(values, data_columns, named, classes, source_name):
    """Count columns in class order: by name when the column names are the classes."""
    k = len(data_columns)
    if classes is None:
        if not named:
            return values, None
        texts = [str(c).strip() for c in data_columns]
        if all(re.fullmatch(r"-?\d+", t) for t in texts):
            return values, np.asarray([int(t) for t in texts])
        return values, np.asarray(list(data_columns))
    classes = np.asarray(classes)
    if k != len(classes):
        raise NoiseBudgetError(f"{source_name}: vote counts have {k} columns but classes has {len(classes)} "
                               f"entries; they must match")
    if named:
        by_text = {str(c): j for j, c in enumerate(data_columns)}
        if set(by_text) == {str(c) for c in classes.tolist()}:
            order = [by_text[str(c)] for c in classes.tolist()]
            return np.asarray(values)[:, order], classes
        if not all(_is_number(str(c)) for c in data_columns):
            raise NoiseBudgetError(f"{source_name}: the count columns {[str(c) for c in data_columns]} are not the "
                                   f"classes {classes.tolist()}; name them after the classes, or pass "
                                   f"evidence='annotators' if the columns are annotators")
    return values, classes


def _from_array(arr, evidence, *, classes=None, items=None, annotators=None, source_name="label evidence"):
    kind = _resolve_kind(arr, evidence, source=source_name)
    if kind == "long":
        raise NoiseBudgetError("evidence='long' needs a table (DataFrame or CSV) with item, annotator and label "
                               "columns")
    if items is not None and len(items) != np.shape(arr)[0]:
        raise NoiseBudgetError(f"{source_name}: {len(items)} item names for {np.shape(arr)[0]} rows")
    if kind == "counts":
        counts = _read_counts(arr)
        if classes is None:
            classes = np.arange(counts.shape[1])
        classes = np.asarray(classes)
        if classes.shape != (counts.shape[1],):
            raise NoiseBudgetError(f"vote counts have {counts.shape[1]} columns but classes has {classes.size} "
                                   f"entries; they must match")
        return LabelEvidence(counts=counts, classes=classes, items=items, kind="counts", source=source_name)
    if kind == "labels":
        values = _read_labels(arr)
        classes = _tidy_classes(values) if classes is None else np.asarray(classes)
        idx = _encode(values, classes, "labels")
        return LabelEvidence(counts=_onehot_counts(idx, len(classes)), classes=classes, items=items, kind="labels",
                             source=source_name)
    if kind != "annotators":
        raise NoiseBudgetError(f"evidence must be one of {_KINDS}, got {kind!r}")
    values, missing = _read_annotators(arr)
    if classes is None:
        classes = _tidy_classes(_as_label_values(values[~missing], "annotator labels"))
    classes = np.asarray(classes)
    idx = np.zeros(values.shape, dtype=np.intp)
    idx[~missing] = _encode(values[~missing], classes, "annotator labels")
    rows, cols = np.nonzero(~missing)
    if annotators is None:
        annotators = np.arange(values.shape[1])
    return LabelEvidence(counts=_annotator_counts(idx, missing, len(classes)), classes=classes, items=items,
                         annotators=annotators, votes=np.stack([rows, cols, idx[rows, cols]], axis=1),
                         kind="annotators", source=source_name)


def _factorize(values, sort):
    import pandas as pd

    try:
        codes, uniques = pd.factorize(pd.Series(values, dtype=object), sort=sort)
    except TypeError:
        codes, uniques = pd.factorize(pd.Series(values, dtype=object), sort=False)
    return codes.astype(np.intp), np.asarray(uniques, dtype=object)


def _from_long(items, annotators, labels, *, classes, source_name, first_line, coerce):
    import pandas as pd

    n_rows = len(items)
    if n_rows == 0:
        raise NoiseBudgetError(f"{source_name} has no votes")
    for what, col in (("item", items), ("annotator", annotators), ("label", labels)):
        blank = np.flatnonzero(pd.isna(pd.Series(col, dtype=object)).to_numpy())
        if blank.size:
            raise NoiseBudgetError(f"{source_name}: the {what} is blank in {_row(int(blank[0]), first_line)}"
                                   f"{' (and ' + str(blank.size - 1) + ' more rows)' if blank.size > 1 else ''}; "
                                   f"every row of long format is one vote: item, annotator, label")
    if coerce:
        labels = _coerce(labels)
    labels = _as_label_values(labels, "labels")
    if labels.dtype.kind == "f" and np.all(labels == np.round(labels)):
        labels = labels.astype(np.int64)
    item_codes, item_names = _factorize(items, sort=False)
    annot_codes, annot_ids = _factorize(annotators, sort=True)
    pair = item_codes.astype(np.int64) * len(annot_ids) + annot_codes
    order = np.argsort(pair, kind="stable")
    dup = np.flatnonzero(np.diff(pair[order]) == 0)
    if dup.size:
        a, b = sorted((int(order[dup[0]]), int(order[dup[0] + 1])))
        raise NoiseBudgetError(f"{source_name}: annotator {annotators[a]!r} labelled item {items[a]!r} twice "
                               f"({_row(a, first_line)} and {_row(b, first_line)}); keep one vote per annotator "
                               f"and item")
    if classes is None:
        classes = _tidy_classes(labels)
    classes = np.asarray(classes)
    label_idx = _encode(labels, classes, "labels")
    counts = np.zeros((len(item_names), len(classes)))
    np.add.at(counts, (item_codes, label_idx), 1.0)
    votes = np.stack([item_codes, annot_codes, label_idx], axis=1)
    votes = votes[np.lexsort((votes[:, 1], votes[:, 0]))]
    if coerce:
        item_names = np.asarray([str(v) for v in item_names], dtype=object)
    return LabelEvidence(counts=counts, classes=classes, items=item_names, annotators=annot_ids, votes=votes,
                         kind="long", source=source_name)
