"""What every image transformer shares: validation at the edge, the
channel-count check and the masked-array output."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..exceptions import ShapeMismatchError
from ..utils import ImageBatch, check_images
from ..utils._param_validation import FITTED_CONSTRAINTS

__all__ = []


def _n_channels(batch):
    return batch.images[0].shape[-1] if batch.channel_axis is not None else 1


def _channels_last(image, foreground):
    """View of ``image`` with a trailing channel axis, even for one channel."""
    return image[..., None] if image.ndim == foreground.ndim else image


class _BaseImageTransformer(TransformerMixin, BaseEstimator):
    """Base of anomseg's image transformers.

    Subclasses declare ``_parameter_constraints`` (scikit-learn's), may add
    ``_check_params()`` for rules that tie parameters together, optionally
    implement ``_fit(batch)``, and implement ``_transform(batch)``, which
    returns a new :class:`ImageBatch` whose images own their memory.

    ``transform`` returns those images as masked arrays whose mask is the new
    foreground's complement, in the input's layout; given an
    :class:`ImageBatch` (as the steps of an :class:`AnomalyPipeline` pass
    them on), it returns one, so that images are validated once per
    pipeline. ``fit_transform`` validates its input once.
    """

    #: What each fitted attribute accepts (see
    #: :attr:`anomseg.base.BaseAnomalySegmenter._fitted_attribute_constraints`);
    #: every subclass adds the attributes of its own.
    _fitted_attribute_constraints: dict = {"n_channels_": FITTED_CONSTRAINTS["n_channels"]}

    def fit(self, X, y=None):
        """Validate the parameters and images, and learn what is needed.

        Parameters
        ----------
        X : array-like, list or ImageBatch
            Images in any layout of :mod:`anomseg.utils`.
        y : None
            Ignored; present for scikit-learn compatibility.

        Returns
        -------
        self : object
            The fitted transformer.
        """
        self._fit_batch(X)
        return self

    def fit_transform(self, X, y=None):
        """Fit on images, then transform them, validating them once.

        Parameters
        ----------
        X : array-like, list or ImageBatch
            Images in any layout of :mod:`anomseg.utils`.
        y : None
            Ignored; present for scikit-learn compatibility.

        Returns
        -------
        Xt : numpy.ma.MaskedArray, list of numpy.ma.MaskedArray or ImageBatch
            As ``transform`` returns it.
        """
        return self._output(X, self._transform(self._fit_batch(X)))

    def transform(self, X):
        """Transform images; the foreground travels as the unmasked part.

        Parameters
        ----------
        X : array-like, list or ImageBatch
            Images in any layout of :mod:`anomseg.utils`, with the number of
            channels seen in ``fit``.

        Returns
        -------
        Xt : numpy.ma.MaskedArray, list of numpy.ma.MaskedArray or ImageBatch
            float32 images, masked outside the foreground: one stacked array
            for an array input, a list for a list input, an
            :class:`ImageBatch` for an :class:`ImageBatch`. ``X`` is never
            modified.
        """
        check_is_fitted(self, "n_channels_")
        return self._output(X, self._transform(self._check_input(X, "transform")))

    def _fit_batch(self, X):
        self._validate_params()
        self._check_params()
        batch = self._check_input(X, "fit")
        self.n_channels_ = _n_channels(batch)
        self._fit(batch)
        return batch

    @staticmethod
    def _output(X, batch):
        return batch if isinstance(X, ImageBatch) else batch.to_masked()

    def _check_input(self, X, method):
        where = f"{type(self).__name__}.{method}"
        batch = check_images(X, where=where, channel_axis=self.channel_axis)
        if method != "fit" and _n_channels(batch) != self.n_channels_:
            raise ShapeMismatchError(
                f"X passed to {where} has {_n_channels(batch)} channel(s), but "
                f"{type(self).__name__} was fitted on {self.n_channels_}."
            )
        return batch

    def _check_params(self):
        """Check rules that tie several parameters together."""

    def _fit(self, batch):
        """Learn from the validated training images; nothing by default."""

    def _transform(self, batch):
        raise NotImplementedError


def _wrap(samples, stacked):
    return np.stack(samples) if stacked else list(samples)
