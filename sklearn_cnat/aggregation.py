"""Aggregators of crowd votes with crowd-kit's interface.

:class:`DawidSkene` is a small, dependency-free Dawid-Skene model (Dawid and Skene,
1979) with the interface of crowd-kit's aggregators: ``fit(data)``,
``fit_predict_proba(data)`` and ``fit_predict(data)`` on a ``DataFrame[task, worker,
label]``, one row per vote. Pass it (or crowd-kit's own ``DawidSkene``, which follows
the same EM steps) to ``NoiseBudgetTransformer(aggregator=...)`` to set the nominal
label distributions from a model of annotator reliability; see ``docs/budgets.md``,
"Aggregators", for which certificate tiers stay valid then.
"""

import numbers

import numpy as np
from sklearn.base import BaseEstimator

from ._compat import Interval
from .exceptions import CNATValueError

__all__ = ["DawidSkene"]

_EPS = 1e-10  # crowd-kit's floor on probabilities before taking logs


def _majority_proba(task_idx, label_idx, n_tasks, n_labels):
    """Vote shares per task (crowd-kit's ``MajorityVote.fit_predict_proba``), shape (n_tasks, n_labels)."""
    counts = np.zeros((n_tasks, n_labels))
    np.add.at(counts, (task_idx, label_idx), 1.0)
    return counts / counts.sum(axis=1, keepdims=True)


def _m_step(task_idx, worker_idx, label_idx, proba, n_workers):
    """Worker error matrices ``errors[w, observed, true]``, columns normalised, floored at ``_EPS``."""
    n_labels = proba.shape[1]
    errors = np.zeros((n_workers, n_labels, n_labels))
    np.add.at(errors, (worker_idx, label_idx), proba[task_idx])
    seen = np.zeros((n_workers, n_labels), dtype=bool)
    seen[worker_idx, label_idx] = True
    errors = np.where(seen[:, :, None], np.maximum(errors, _EPS), 0.0)
    totals = errors.sum(axis=1, keepdims=True)
    return np.divide(errors, totals, out=np.zeros_like(errors), where=totals > 0)


def _e_step(task_idx, worker_idx, label_idx, priors, errors, n_tasks):
    """Posterior class probabilities per task given priors and error matrices."""
    log_lik = np.tile(np.log(np.maximum(priors, _EPS)), (n_tasks, 1))
    with np.errstate(divide="ignore"):
        np.add.at(log_lik, task_idx, np.log(errors[worker_idx, label_idx]))
    log_lik -= log_lik.max(axis=1, keepdims=True)
    lik = np.exp(log_lik)
    return lik / lik.sum(axis=1, keepdims=True)


def _elbo(task_idx, worker_idx, label_idx, proba, priors, errors):
    """Evidence lower bound per vote, as crowd-kit computes it (the prior counted once per vote)."""
    log_terms = np.log(errors[worker_idx, label_idx]) + np.log(np.maximum(priors, _EPS))  # (n_votes, n_labels)
    joint = float((proba[task_idx] * log_terms).sum())
    p = np.maximum(proba, _EPS)
    entropy = -float((np.log(p) * p).sum())
    return (joint + entropy) / len(task_idx)


class DawidSkene(BaseEstimator):
    """Dawid-Skene model of annotator reliability, fitted by EM (crowd-kit's interface).

    Each annotator ``w`` has a confusion matrix ``e_w[l, c] = P(w says l | true class
    c)``; classes have prior ``p``. EM starts from the vote shares of each task and
    alternates the M-step (``p`` = mean posterior; ``e_w[l, c]`` proportional to the
    posterior mass of ``c`` on the tasks where ``w`` said ``l``) and the E-step
    (``P(c | votes of task j) ∝ p_c prod_w e_w[y_wj, c]``), until the evidence lower
    bound per vote improves by less than ``tol`` or ``n_iter`` iterations. The steps,
    the floor ``1e-10`` and the stopping rule follow crowd-kit's ``DawidSkene``. There
    are no random draws: the result is a deterministic function of the votes.

    Parameters
    ----------
    n_iter : int >= 1, default=100
        Maximum number of EM iterations.
    tol : float >= 0, default=1e-5
        Stop when the evidence lower bound per vote improves by less than this.

    Attributes
    ----------
    probas_ : pandas.DataFrame of shape (n_tasks, n_labels)
        Posterior class probabilities, indexed by task, one column per label.
    labels_ : pandas.Series of shape (n_tasks,)
        Most probable label per task (ties to the first label).
    priors_ : pandas.Series of shape (n_labels,)
        Class priors ``p``.
    errors_ : ndarray of shape (n_workers, n_labels, n_labels)
        ``errors_[w, l, c] = P(worker w says label l | true label c)``; workers in
        ``workers_`` order, labels in ``probas_.columns`` order.
    workers_ : ndarray of shape (n_workers,)
        Worker ids.
    n_iter_ : int
        EM iterations run.
    loss_history_ : list of float
        Evidence lower bound per vote after each iteration.

    References
    ----------
    A. P. Dawid and A. M. Skene, "Maximum Likelihood Estimation of Observer Error-Rates
    Using the EM Algorithm", Journal of the Royal Statistical Society C 28(1), 1979.

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn_cnat.aggregation import DawidSkene
    >>> votes = pd.DataFrame({"task": [0, 0, 0, 1, 1, 1], "worker": ["a", "b", "c"] * 2,
    ...                       "label": ["cat", "cat", "dog", "dog", "dog", "dog"]})
    >>> DawidSkene().fit_predict(votes).tolist()
    ['cat', 'dog']
    """

    _parameter_constraints = {
        "n_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
    }

    def __init__(self, n_iter=100, tol=1e-5):
        self.n_iter = n_iter
        self.tol = tol

    def fit(self, data):
        """Fit the model on one vote per row.

        Parameters
        ----------
        data : pandas.DataFrame of shape (n_votes, >= 3)
            Columns ``task``, ``worker`` and ``label``; other columns are ignored.

        Returns
        -------
        self : DawidSkene
        """
        import pandas as pd

        self._validate_params()
        missing = [c for c in ("task", "worker", "label") if c not in getattr(data, "columns", ())]
        if missing:
            raise CNATValueError(f"DawidSkene needs a DataFrame with columns task, worker, label; missing "
                                 f"{missing}")
        if len(data) == 0:
            raise CNATValueError("DawidSkene needs at least one vote")
        data = data[["task", "worker", "label"]]
        if data.isna().to_numpy().any():
            raise CNATValueError("DawidSkene: task, worker and label must not be missing")
        task_idx, tasks = pd.factorize(data["task"], sort=False)
        worker_idx, workers = pd.factorize(data["worker"], sort=False)
        label_idx, labels = pd.factorize(data["label"], sort=True)
        n_tasks, n_workers = len(tasks), len(workers)
        proba = _majority_proba(task_idx, label_idx, n_tasks, len(labels))
        priors = proba.mean(axis=0)
        errors = _m_step(task_idx, worker_idx, label_idx, proba, n_workers)
        self.loss_history_ = []
        loss = -np.inf
        self.n_iter_ = 0
        for _ in range(self.n_iter):
            proba = _e_step(task_idx, worker_idx, label_idx, priors, errors, n_tasks)
            priors = proba.mean(axis=0)
            errors = _m_step(task_idx, worker_idx, label_idx, proba, n_workers)
            new_loss = _elbo(task_idx, worker_idx, label_idx, proba, priors, errors)
            self.loss_history_.append(new_loss)
            self.n_iter_ += 1
            if new_loss - loss < self.tol:
                break
            loss = new_loss
        columns = pd.Index(labels, name="label")
        self.probas_ = pd.DataFrame(proba, index=pd.Index(tasks, name="task"), columns=columns)
        self.labels_ = pd.Series(np.asarray(labels)[np.argmax(proba, axis=1)], index=self.probas_.index,
                                 name="agg_label")
        self.priors_ = pd.Series(priors, index=columns, name="prior")
        self.errors_ = errors
        self.workers_ = np.asarray(workers)
        return self

    def fit_predict_proba(self, data):
        """Fit on ``data`` and return the posterior class probabilities per task.

        Parameters
        ----------
        data : pandas.DataFrame
            Columns ``task``, ``worker``, ``label``.

        Returns
        -------
        probas : pandas.DataFrame of shape (n_tasks, n_labels)
        """
        return self.fit(data).probas_

    def fit_predict(self, data):
        """Fit on ``data`` and return the most probable label per task.

        Parameters
        ----------
        data : pandas.DataFrame
            Columns ``task``, ``worker``, ``label``.

        Returns
        -------
        labels : pandas.Series of shape (n_tasks,)
        """
        return self.fit(data).labels_
