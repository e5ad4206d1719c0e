"""A scikit-learn ``Pipeline`` that certifies through its last step.

``sklearn_cnat.pipeline.Pipeline`` is scikit-learn's ``Pipeline`` with one method
more, :meth:`Pipeline.certify`, and one rule more: the steps before the final
estimator are fitted on ``X`` alone, never on the labels. As imbalanced-learn ships
its own pipeline for ``fit_resample``, this one exists for ``certify``: a certificate
holds the final estimator's inputs fixed while the training labels change, which is
true of the earlier steps only if they never saw the labels.
"""

from sklearn.pipeline import Pipeline as _SkPipeline

from ._compat import _name_estimators
from .exceptions import CNATTypeError, CNATValueError

__all__ = ["Pipeline", "make_pipeline"]


class Pipeline(_SkPipeline):
    """scikit-learn's ``Pipeline`` with ``certify``; steps before the last are fitted without ``y``.

    Same parameters, attributes and methods as ``sklearn.pipeline.Pipeline``, and:

    * :meth:`certify` transforms ``X`` through the fitted steps and returns the final
      estimator's ``certify`` on the result, so
      ``pipe.certify(X) == pipe[-1].certify(pipe[:-1].transform(X))``.
    * ``fit`` (and ``fit_transform``, ``fit_predict``) fits every step before the final
      estimator on ``X`` alone: ``y`` (labels or votes) reaches only the final
      estimator. The certificate's statement (docs/certificates.md) keeps the final
      estimator's inputs fixed while the training labels change; a step fitted on the
      labels (e.g. ``SelectKBest``) would make those inputs depend on them, so such a
      step fails to fit here instead of making the certificate's scope false. Put
      label-using feature learning inside the CNAT estimator (whose ``scope`` then says
      ``"head"``).

    Examples
    --------
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn_cnat import CNATClassifier
    >>> from sklearn_cnat.datasets import load_digits_votes
    >>> from sklearn_cnat.pipeline import make_pipeline
    >>> X, votes = load_digits_votes(return_X_y=True)
    >>> pipe = make_pipeline(StandardScaler(), CNATClassifier(head="ridge", alpha=10.0)).fit(X[:300], votes[:300])
    >>> cert = pipe.certify(X[300:350], tier="bounded")
    >>> cert.tier, len(cert)
    ('bounded', 50)
    """

    def _fit(self, X, y=None, *args, **kwargs):
        # The hook every fit method of scikit-learn's Pipeline goes through for the steps
        # before the last; y still reaches the final estimator (see the class docstring).
        try:
            return super()._fit(X, None, *args, **kwargs)
        except ValueError as exc:
            if "y to be passed" not in str(exc) and "target y is None" not in str(exc):
                raise
            raise CNATValueError(
                f"a step before the final estimator needs y to fit ({exc}); sklearn_cnat.pipeline.Pipeline fits "
                "those steps on X alone, so that the features a certificate holds fixed never saw the labels: "
                "drop the step, or use sklearn.pipeline.Pipeline if you do not need certify") from exc

    def certify(self, X, **params):
        """Certify the final estimator's predictions on ``X`` transformed by the other steps.

        Parameters
        ----------
        X : array-like
            Inputs of the first step.
        **params
            Passed to the final estimator's ``certify`` (``tier``, ``m``, ``delta``).

        Returns
        -------
        Certificate
            The final estimator's certificate for ``X`` (its ``scope`` is the final
            estimator's: the earlier steps never saw the labels).
        """
        final = self._final_estimator
        if not callable(getattr(final, "certify", None)):
            raise CNATTypeError(f"the final step {self.steps[-1][0]!r} ({type(final).__name__}) has no certify "
                                "method; end the pipeline with a CNAT estimator (e.g. CNATClassifier(head='ridge'))")
        Xt = X
        for _, _, transformer in self._iter(with_final=False):
            Xt = transformer.transform(Xt)
        return final.certify(Xt, **params)


def make_pipeline(*steps, memory=None, transform_input=None, verbose=False):
    """Construct a :class:`Pipeline` from the given estimators (names are generated).

    Same as ``sklearn.pipeline.make_pipeline``, returning this package's
    :class:`Pipeline` (with ``certify``).

    Parameters
    ----------
    *steps : list of estimators
        Transformers, then a final estimator.
    memory : str or object with the joblib.Memory interface, default=None
        Caches the fitted transformers.
    transform_input : list of str, default=None
        As in scikit-learn (needs metadata routing).
    verbose : bool, default=False
        Print the time each step takes.

    Returns
    -------
    p : Pipeline

    Examples
    --------
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn_cnat import CNATClassifier
    >>> from sklearn_cnat.pipeline import make_pipeline
    >>> make_pipeline(StandardScaler(), CNATClassifier(head="ridge")).steps[0][0]
    'standardscaler'
    """
    kwargs = dict(memory=memory, verbose=verbose)
    if transform_input is not None:
        kwargs["transform_input"] = transform_input
    return Pipeline(_name_estimators(steps), **kwargs)
