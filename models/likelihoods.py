"""Observation models p(x | z): the decoder's raw output mapped to a distribution over an image.

A likelihood is a ``torch.nn.Module`` (learned scales are parameters) that

* turns the decoder's raw output ``(..., C, H, W)`` into a Pyro distribution
  whose event is the whole image (three event dimensions);
* gives the image-space mean, for reconstructions and samples;
* declares the data it accepts (``support``, ``discrete``) and checks a data set
  against it before any training step (:meth:`Likelihood.check_data`);
* carries a tempering ``scale``: the log-likelihood is multiplied by it through
  ``poutine.scale``. The reference setup uses ``scale = 1 / sigma_x^2 ~ 99.5``
  with a Bernoulli likelihood, which is the same as weighting the latent terms
  by about 0.01 (a beta-VAE weight). Only ``scale = 1`` gives a true ELBO.

Registered (``LIKELIHOODS``):

=========================  ====================================  ==============================
name                       p(x | z) per pixel                    data
=========================  ====================================  ==============================
``bernoulli``              Bernoulli(sigmoid f)                  [0, 1] (pmf on {0, 1})
``continuous-bernoulli``   ContinuousBernoulli(logits f)         [0, 1] (density)
``gaussian``               N(g(f), std^2), fixed std             finite reals (density)
``gaussian-learned``       N(g(f), std^2), learned std           finite reals (density)
``laplace``                Laplace(g(f), std / sqrt 2)           finite reals (density)
``discretized-logistic``   logistic(g(f), s) integrated on bins  8-bit grid k/255 (pmf)
=========================  ====================================  ==============================

``g`` is the link (``sigmoid`` by default, or ``identity``). Framework
arguments: a factory declaring ``image_shape`` (the likelihoods with learned
scales, which may be per pixel) receives the data's ``(C, H, W)`` from
:func:`build_likelihood`.

:func:`bits_per_dim` converts a negative log-likelihood (or negative ELBO) in
nats to bits per dimension on a scale shared by discrete and continuous
likelihoods.
"""

from __future__ import annotations

import math
from typing import Literal

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from torch import nn

from pssl.checks import positive_number
from pssl.registry import Registry

LIKELIHOODS: Registry[Likelihood] = Registry("likelihood")

REFERENCE_LOG_VARIANCE = -4.6
"""log sigma_x^2 of the reference setup; exp(4.6) ~ 99.5 is its likelihood scale."""

NUM_LEVELS = 256
"""Values of an 8-bit channel; the data layer maps them to the grid k / 255, k = 0..255."""

GRID_TOLERANCE = 1e-3
"""How far (in grid steps, 1/255) a value may sit from k/255 and still count as 8-bit."""


def _check_positive(value: float, where: str) -> float:
    return positive_number(value, where)


class Likelihood(nn.Module):
    """Base class for p(x | z).

    Attributes:
        scale: tempering factor multiplying the log-likelihood (1 is the true ELBO).
        support: human-readable description of the data accepted.
        discrete: True when the likelihood is a probability mass function over
            the data values (so its log-likelihood is directly a code length and
            needs no dequantisation correction in :func:`bits_per_dim`).
    """

    support: str = "finite real numbers"
    discrete: bool = False

    def __init__(self, *, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = _check_positive(scale, "likelihood.scale")

    def distribution(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        """p(x | z) for raw decoder output ``decoded`` of shape ``(..., C, H, W)``."""
        raise NotImplementedError

    def mean(self, decoded: torch.Tensor) -> torch.Tensor:
        """E[x | z] in image space, same shape as ``decoded``."""
        raise NotImplementedError

    def check_data(self, images: torch.Tensor, *, name: str = "data") -> None:
        """Raise ``ValueError`` if ``images`` lie outside the support.

        Args:
            images: float tensor of any shape.
            name: how the data is called in the message.
        """
        if not torch.isfinite(images).all():
            raise ValueError(
                f"{name} contains NaN or infinite values; {type(self).__name__} needs finite data"
            )


class _UnitIntervalLikelihood(Likelihood):
    support = "[0, 1]"

    def check_data(self, images: torch.Tensor, *, name: str = "data") -> None:
        super().check_data(images, name=name)
        if images.numel() == 0:
            return
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{name} has values in [{lo:.4g}, {hi:.4g}], outside the support {self.support} of the "
                f"{type(self).__name__} likelihood; rescale the data to [0, 1] or choose "
                f"likelihood=gaussian"
            )


@LIKELIHOODS.register(
    "bernoulli", help="Bernoulli on logits (binary cross-entropy; grey values in [0,1] as soft targets)"
)
class BernoulliLikelihood(_UnitIntervalLikelihood):
    """p(x | z) = prod_p Bernoulli(x_p; sigmoid(f(z)_p)).

    A probability mass function on binary data (``discrete``). For grey values
    in (0, 1) this is the cross-entropy used by the reference code; it is
    neither a pmf nor a normalised density there (the continuous Bernoulli is),
    so its bits per dimension are comparable only with other Bernoulli numbers.
    """

    support = "[0, 1] (a pmf on {0, 1}; grey values are soft targets)"
    discrete = True

    def distribution(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        # validate_args=False: grey values are accepted as soft targets (see class docstring).
        return dist.Bernoulli(logits=decoded, validate_args=False).to_event(3)

    def mean(self, decoded: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(decoded)


def continuous_bernoulli_log_normalizer(logits: torch.Tensor) -> torch.Tensor:
    r"""``log C(lambda)`` of the continuous Bernoulli, stable for every ``lambda``.

    With ``p(x) = C(lambda) exp(lambda x)`` on ``[0, 1]`` (the logits form of
    ``C sigma^x (1 - sigma)^(1-x)``, up to the factor absorbed below):

    .. math::

        \log C(\lambda) = \log\lambda - \log(e^\lambda - 1)
        = \log|\lambda| - \max(\lambda, 0) - \log(1 - e^{-|\lambda|}),

    and ``-lambda/2 - lambda^2/24`` (Taylor) for ``|lambda| < 1e-3``, where the
    exact form cancels. Torch's own normaliser works from clamped
    probabilities and drifts past ``|lambda| ~ 15`` in float32 (0.01 nats at 15,
    0.2 at 20); this form does not.
    """
    small = logits.abs() < 1e-3
    safe = torch.where(small, torch.ones_like(logits), logits)
    exact = safe.abs().log() - safe.clamp(min=0) - torch.log(-torch.expm1(-safe.abs()))
    taylor = -logits / 2 - logits.pow(2) / 24
    return torch.where(small, taylor, exact)


class StableContinuousBernoulli(dist.ContinuousBernoulli):
    """Pyro's ``ContinuousBernoulli`` with a log-density and mean stable for large logits.

    ``log p(x) = lambda x + log C(lambda)`` with :func:`continuous_bernoulli_log_normalizer`;
    the mean ``1 / (1 - e^{-lambda}) - 1 / lambda`` (``1/2 + lambda/12`` near 0).
    Sampling is inherited (inverse CDF from clamped probabilities: accurate for
    ``|lambda| <~ 15``, slightly too spread beyond).
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits, value = torch.broadcast_tensors(self.logits, value)
        return logits * value + continuous_bernoulli_log_normalizer(logits)

    @property
    def mean(self) -> torch.Tensor:
        logits = self.logits
        small = logits.abs() < 1e-3
        safe = torch.where(small, torch.ones_like(logits), logits)
        exact = 1.0 / (-torch.expm1(-safe)) - 1.0 / safe
        return torch.where(small, 0.5 + logits / 12, exact)

    def expand(self, batch_shape: torch.Size, _instance=None) -> StableContinuousBernoulli:
        new = self._get_checked_instance(StableContinuousBernoulli, _instance)
        return super().expand(batch_shape, _instance=new)


@LIKELIHOODS.register(
    "continuous-bernoulli",
    help="continuous Bernoulli on logits: the normalised density on [0,1] (logits clamped to +-max_logit)",
)
class ContinuousBernoulliLikelihood(_UnitIntervalLikelihood):
    r"""p(x | z) = prod_p CB(x_p; lambda_p), ``CB(x; lambda) = C(lambda) exp(lambda x)`` on [0, 1].

    The normalised counterpart of the Bernoulli cross-entropy on grey values
    (Loaiza-Ganem & Cunningham, 2019). The log-normaliser is computed in a form
    stable for every logit (:func:`continuous_bernoulli_log_normalizer`).

    Logits clamp: ``lambda = clamp(f(z), -max_logit, max_logit)``. On data at
    exactly 0 or 1 (binary images) the density there grows like ``|lambda|``
    without bound, so an unclamped decoder can push the log-likelihood up
    forever; the clamp caps it at ``log max_logit`` nats per pixel and keeps
    the mean within ``1/max_logit`` of the edges. Beyond the clamp the gradient is zero.

    The mean (reconstructions, samples) is the distribution's mean, not
    ``sigmoid(f)``: ``E[x] = 1 / (1 - e^{-lambda}) - 1 / lambda``.
    """

    support = "[0, 1] (density)"

    def __init__(self, *, max_logit: float = 30.0, scale: float = 1.0) -> None:
        super().__init__(scale=scale)
        self.max_logit = _check_positive(max_logit, "likelihood.max_logit")

    def distribution(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        logits = decoded.clamp(-self.max_logit, self.max_logit)
        return StableContinuousBernoulli(logits=logits).to_event(3)

    def mean(self, decoded: torch.Tensor) -> torch.Tensor:
        return self.distribution(decoded).base_dist.mean


def _link(decoded: torch.Tensor, link: str) -> torch.Tensor:
    return torch.sigmoid(decoded) if link == "sigmoid" else decoded


LINKS = ("sigmoid", "identity")


def _check_link(link: str) -> str:
    if link not in LINKS:
        raise ValueError(f"likelihood.link must be one of {', '.join(LINKS)}, got {link!r}")
    return link


@LIKELIHOODS.register(
    "gaussian",
    help="Gaussian with fixed std (default exp(-4.6/2) as the reference), mean sigmoid(f(z)) or f(z) "
    "(link=identity)",
)
class GaussianLikelihood(Likelihood):
    """p(x | z) = N(x; g(f(z)), std^2 I) with a fixed ``std`` and link ``g`` (sigmoid or identity)."""

    support = "finite real numbers (density)"

    def __init__(
        self,
        *,
        std: float = math.exp(REFERENCE_LOG_VARIANCE / 2),
        link: Literal["sigmoid", "identity"] = "sigmoid",
        scale: float = 1.0,
    ) -> None:
        super().__init__(scale=scale)
        self.std = _check_positive(std, "likelihood.std")
        self.link = _check_link(link)

    def distribution(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        loc = _link(decoded, self.link)
        return dist.Normal(loc, torch.full_like(loc, self.std)).to_event(3)

    def mean(self, decoded: torch.Tensor) -> torch.Tensor:
        return _link(decoded, self.link)


class LearnedSpread(nn.Module):
    """A positive spread ``min_value + softplus(raw)``: one number, or one per pixel ``(C, H, W)``.

    Learned (a parameter) or fixed (a buffer). ``raw`` starts where the spread
    equals ``init``.
    """

    def __init__(
        self,
        init: float,
        *,
        min_value: float,
        learn: bool,
        shape: tuple[int, ...] = (),
        where: str = "likelihood.std",
    ) -> None:
        super().__init__()
        init = _check_positive(init, where)
        if init <= min_value:
            raise ValueError(f"{where} must exceed the floor {min_value!r}, got {init!r}")
        self.min_value = float(min_value)
        raw = torch.full(tuple(shape), init - min_value).expm1().log()  # inverse softplus
        if learn:
            self.raw = nn.Parameter(raw)
        else:
            self.register_buffer("raw", raw)

    def forward(self) -> torch.Tensor:
        return F.softplus(self.raw) + self.min_value


def _spread_shape(image_shape: tuple[int, int, int] | None, per_pixel: bool, learn: bool) -> tuple[int, ...]:
    if not per_pixel:
        return ()
    if not learn:
        raise ValueError(
            "likelihood.per_pixel=true needs learn=true (a fixed spread is the same for every pixel)"
        )
    if image_shape is None:
        raise ValueError("likelihood.per_pixel=true needs the image shape (C, H, W)")
    return tuple(int(s) for s in image_shape)


class _ShapedLikelihood(Likelihood):
    """A likelihood that knows the image shape and checks data against it."""

    def __init__(self, *, image_shape: tuple[int, int, int] | None, scale: float) -> None:
        super().__init__(scale=scale)
        if image_shape is not None:
            image_shape = tuple(int(s) for s in image_shape)
            if len(image_shape) != 3:
                raise ValueError(f"image_shape must be (channels, height, width), got {image_shape!r}")
        self.image_shape = image_shape

    def _init_spread(self, *, std: float, learn: bool, per_pixel: bool, min_std: float, link: str) -> None:
        """The link and the (learned or fixed) spread shared by the location-scale likelihoods."""
        min_std = _check_positive(min_std, "likelihood.min_std")
        self.link = _check_link(link)
        self.learn = bool(learn)
        self.per_pixel = bool(per_pixel)
        self.spread = LearnedSpread(
            std,
            min_value=min_std if learn else 0.0,
            learn=learn,
            shape=_spread_shape(self.image_shape, per_pixel, learn),
        )

    def check_data(self, images: torch.Tensor, *, name: str = "data") -> None:
        super().check_data(images, name=name)
        if self.image_shape is not None and tuple(images.shape[-3:]) != self.image_shape:
            raise ValueError(
                f"{name} has images of shape {tuple(images.shape[-3:])}, but the {type(self).__name__} was "
                f"built for {self.image_shape}"
            )


@LIKELIHOODS.register(
    "gaussian-learned",
    help="Gaussian with learned std (one global, or per_pixel=true one per pixel; starts at std); "
    "link as gaussian",
)
class LearnedGaussianLikelihood(_ShapedLikelihood):
    r"""p(x | z) = N(x; g(f(z)), sigma^2) with ``sigma`` learned: one number, or one per pixel.

    ``sigma = min_std + softplus(r)``, ``r`` initialised so ``sigma = std``. The
    ML optimum of a global ``sigma`` is the root-mean-square reconstruction
    error, so the learned std is the usual remedy for the fixed-variance
    Gaussian's arbitrary weighting of reconstruction against the latent terms.
    ``min_std`` (default 1e-3, a quarter of a grey level) stops the density from
    collapsing on pixels the decoder fits exactly (constant background).

    Args:
        image_shape: ``(C, H, W)`` (framework-supplied; needed with ``per_pixel``).
        std: initial std.
        per_pixel: one std per pixel and channel instead of one overall.
        min_std: floor of the std.
        link: ``sigmoid`` (mean in (0, 1)) or ``identity``.
        scale: tempering of the log-likelihood.
    """

    support = "finite real numbers (density)"

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int] | None,
        std: float = 0.1,
        per_pixel: bool = False,
        min_std: float = 1e-3,
        link: Literal["sigmoid", "identity"] = "sigmoid",
        scale: float = 1.0,
    ) -> None:
        super().__init__(image_shape=image_shape, scale=scale)
        self._init_spread(std=std, learn=True, per_pixel=per_pixel, min_std=min_std, link=link)

    def std(self) -> torch.Tensor:
        """The current std: a scalar, or ``(C, H, W)`` with ``per_pixel``."""
        return self.spread()

    def distribution(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        loc = _link(decoded, self.link)
        return dist.Normal(loc, self.std().expand_as(loc)).to_event(3)

    def mean(self, decoded: torch.Tensor) -> torch.Tensor:
        return _link(decoded, self.link)


@LIKELIHOODS.register(
    "laplace",
    help="Laplace with mean g(f(z)) and std (b = std/sqrt 2), fixed or learn=true (per_pixel=true: "
    "per pixel)",
)
class LaplaceLikelihood(_ShapedLikelihood):
    r"""p(x | z) = prod_p Laplace(x_p; g(f(z))_p, b), ``log p = -|x - mu| / b - log(2 b)``.

    The scale is given as a standard deviation ``std = sqrt(2) b`` so that
    ``likelihood.std`` means the same for ``gaussian`` and ``laplace``. Fixed by
    default (``learn=false``, like the reference's fixed-variance Gaussian; the
    reconstruction term is then an L1 loss times ``1/b``); ``learn=true`` fits
    ``b`` (one overall, or per pixel with ``per_pixel=true``) with a floor
    ``min_std / sqrt 2``.

    Args:
        image_shape: ``(C, H, W)`` (framework-supplied; needed with ``per_pixel``).
        std: standard deviation (initial value when learned).
        learn: learn the scale.
        per_pixel: one scale per pixel and channel (needs ``learn``).
        min_std: floor of the learned std.
        link: ``sigmoid`` or ``identity``.
        scale: tempering of the log-likelihood.
    """

    support = "finite real numbers (density)"

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int] | None,
        std: float = 0.1,
        learn: bool = False,
        per_pixel: bool = False,
        min_std: float = 1e-3,
        link: Literal["sigmoid", "identity"] = "sigmoid",
        scale: float = 1.0,
    ) -> None:
        super().__init__(image_shape=image_shape, scale=scale)
        self._init_spread(std=std, learn=learn, per_pixel=per_pixel, min_std=min_std, link=link)

    def std(self) -> torch.Tensor:
        """The current standard deviation ``sqrt(2) b``."""
        return self.spread()

    def distribution(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        loc = _link(decoded, self.link)
        return dist.Laplace(loc, (self.std() / math.sqrt(2)).expand_as(loc)).to_event(3)

    def mean(self, decoded: torch.Tensor) -> torch.Tensor:
        return _link(decoded, self.link)


class _EightBitGrid(constraints.Constraint):
    """Support of :class:`DiscretizedLogistic`: the 256 values ``k / 255`` (a discrete set).

    ``check`` accepts any value in [0, 1], because off-grid values are scored as
    their nearest grid value (see :class:`DiscretizedLogistic`).
    """

    is_discrete = True
    event_dim = 0

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return (value >= 0) & (value <= 1)

    def __repr__(self) -> str:
        return "EightBitGrid()"


class DiscretizedLogistic(TorchDistribution):
    r"""A logistic density integrated over the bins of the 8-bit grid ``{k / 255 : k = 0..255}``.

    For ``x = k / 255`` with half bin width ``h = 1 / 510`` and logistic CDF
    ``F(t) = sigmoid((t - loc) / s)``:

    .. math::

        P(k) = \begin{cases}
            F(h) & k = 0 \quad (\text{the whole left tail}) \\
            F(x + h) - F(x - h) & 0 < k < 255 \\
            1 - F(1 - h) & k = 255 \quad (\text{the whole right tail})
        \end{cases}

    so the 256 probabilities sum to 1 for any ``loc`` and ``s``. The interior
    case is computed stably as ``log sigmoid(a) + log sigmoid(-b) + log(1 - e^{b - a})``
    with ``a = (x + h - loc) / s`` and ``b = (x - h - loc) / s`` (a single
    logistic per pixel, PixelCNN++'s discretisation without its mixture).

    Values off the grid (e.g. views from an interpolating augmentation) are
    rounded to the nearest grid value first: the distribution scores the
    8-bit quantisation of what it is given. Batch shape is the broadcast shape
    of ``loc`` and ``scale``; event shape ``()``.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = _EightBitGrid()
    has_rsample = False

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, validate_args: bool | None = None) -> None:
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        super().__init__(self.loc.shape, torch.Size(), validate_args=validate_args)

    def expand(self, batch_shape: torch.Size, _instance=None) -> DiscretizedLogistic:
        new = self._get_checked_instance(DiscretizedLogistic, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        super(DiscretizedLogistic, new).__init__(batch_shape, torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        last = NUM_LEVELS - 1
        level = (value * last).round().clamp(0, last)
        x = level / last
        half = 0.5 / last
        inv_s = self.scale.reciprocal()
        above = (x + half - self.loc) * inv_s
        below = (x - half - self.loc) * inv_s
        width = torch.log(-torch.expm1(-inv_s / last))  # log(1 - e^{b - a}), b - a = -1 / (255 s)
        interior = F.logsigmoid(above) + F.logsigmoid(-below) + width
        return torch.where(
            level == 0, F.logsigmoid(above), torch.where(level == last, F.logsigmoid(-below), interior)
        )

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            t = self.loc.expand(shape) + self.scale.expand(shape) * (u.log() - (-u).log1p())
            last = NUM_LEVELS - 1
            return (t * last).round().clamp(0, last) / last

    @property
    def mean(self) -> torch.Tensor:
        """``E[x] = sum_{k>=1} P(X >= k) / 255 = (1/255) sum_{k=1}^{255} sigmoid((loc - (k - 1/2)/255) / s)``.

        Shape: the batch shape.
        """
        last = NUM_LEVELS - 1
        total = torch.zeros_like(self.loc)
        for k in range(1, NUM_LEVELS):
            total = total + torch.sigmoid((self.loc - (k - 0.5) / last) / self.scale)
        return total / last


@LIKELIHOODS.register(
    "discretized-logistic",
    help="8-bit images: one logistic per pixel integrated over bins of width 1/255 (a pmf); learned scale",
)
class DiscretizedLogisticLikelihood(_ShapedLikelihood):
    r"""p(x | z) = prod_p DiscretizedLogistic(x_p; g(f(z))_p, s): a pmf over the 256 grey levels.

    See :class:`DiscretizedLogistic` for the bins (width 1/255 on the grid
    ``k/255``; the edge bins at 0 and 1 take the whole tails). The logistic's
    scale ``s`` is given as a standard deviation (``std = s pi / sqrt 3``) and is
    learned by default (one overall, or per pixel with ``per_pixel=true``) with a
    floor ``min_std``. Being a pmf, its log-likelihood is bounded above by 0 and
    is directly a code length (:func:`bits_per_dim` applies no correction).

    Data: values on the 8-bit grid ``k / 255`` in [0, 1] (what the data layer
    produces from ``uint8`` images); :meth:`check_data` refuses anything else.

    Args:
        image_shape: ``(C, H, W)`` (framework-supplied; needed with ``per_pixel``).
        std: logistic standard deviation (initial value when learned).
        learn: learn the scale.
        per_pixel: one scale per pixel and channel (needs ``learn``).
        min_std: floor of the learned std.
        link: ``sigmoid`` (location in (0, 1)) or ``identity``.
        scale: tempering of the log-likelihood.
    """

    support = "8-bit grid values k/255 in [0, 1] (pmf)"
    discrete = True

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int] | None,
        std: float = 0.1,
        learn: bool = True,
        per_pixel: bool = False,
        min_std: float = 1e-3,
        link: Literal["sigmoid", "identity"] = "sigmoid",
        scale: float = 1.0,
    ) -> None:
        super().__init__(image_shape=image_shape, scale=scale)
        self._init_spread(std=std, learn=learn, per_pixel=per_pixel, min_std=min_std, link=link)

    def logistic_scale(self) -> torch.Tensor:
        """``s = std sqrt(3) / pi``."""
        return self.spread() * (math.sqrt(3) / math.pi)

    def distribution(self, decoded: torch.Tensor) -> dist.TorchDistribution:
        loc = _link(decoded, self.link)
        return DiscretizedLogistic(loc, self.logistic_scale().expand_as(loc)).to_event(3)

    def mean(self, decoded: torch.Tensor) -> torch.Tensor:
        return self.distribution(decoded).base_dist.mean

    def check_data(self, images: torch.Tensor, *, name: str = "data") -> None:
        super().check_data(images, name=name)
        if images.numel() == 0:
            return
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{name} has values in [{lo:.4g}, {hi:.4g}]; the discretized-logistic likelihood models "
                "8-bit images scaled to the grid k/255 in [0, 1]"
            )
        levels = images.double() * (NUM_LEVELS - 1)
        off = (levels - levels.round()).abs()
        worst = float(off.max())
        if worst > GRID_TOLERANCE:
            value = float(images.reshape(-1)[off.reshape(-1).argmax()])
            raise ValueError(
                f"{name} is not 8-bit data: value {value:.6g} lies {worst:.3g} grid steps from the nearest "
                f"k/255 (tolerance {GRID_TOLERANCE}); the discretized-logistic likelihood needs values on "
                "the grid k/255, k = 0..255 (uint8 images divided by 255); choose likelihood=gaussian or "
                "continuous-bernoulli for other data"
            )


# --- building by name ---------------------------------------------------------------------


def build_likelihood(
    name: str | Likelihood,
    options: dict | None = None,
    *,
    image_shape: tuple[int, int, int] | None = None,
) -> Likelihood:
    """Build a registered likelihood by name, or pass a ready :class:`Likelihood` through.

    Args:
        name: a registered name (see ``LIKELIHOODS``) or a ready likelihood.
        options: user options of the registered likelihood.
        image_shape: ``(C, H, W)`` of the data, given to likelihoods that declare it.

    Raises:
        ValueError: for an unknown name (listing the accepted ones) or a bad option.
    """
    if isinstance(name, Likelihood):
        return name
    entry = LIKELIHOODS.entry(name)
    framework = {}
    if "image_shape" in entry.parameters():
        framework["image_shape"] = None if image_shape is None else tuple(image_shape)
    return LIKELIHOODS.build(name, options, **framework)


def default_likelihood(image_shape: tuple[int, int, int]) -> str:
    """Reference choice: Bernoulli for grey images, fixed-variance Gaussian for colour."""
    return "bernoulli" if image_shape[0] == 1 else "gaussian"


def _is_discrete(likelihood: Likelihood | str) -> bool:
    if isinstance(likelihood, Likelihood):
        return likelihood.discrete
    if isinstance(likelihood, str):
        factory = LIKELIHOODS.entry(likelihood).factory
        if isinstance(factory, type) and issubclass(factory, Likelihood):
            return factory.discrete
        raise ValueError(
            f"cannot tell whether likelihood {likelihood!r} is discrete; pass the likelihood object"
        )
    raise TypeError(f"likelihood must be a Likelihood or a registered name, got {type(likelihood).__name__}")


def bits_per_dim(
    nats_per_item: float,
    num_dims: int,
    *,
    likelihood: Likelihood | str,
    data_is_8bit: bool = True,
) -> float:
    r"""Bits per dimension from a negative log-likelihood (or negative ELBO) in nats per item.

    Convention, so that numbers from discrete and continuous likelihoods can be
    compared:

    * **Discrete likelihoods** (``likelihood.discrete``: ``discretized-logistic``,
      ``bernoulli`` on binary data) are probability mass functions over the data
      values; ``-log P(x)`` is already a code length: no correction.
    * **Continuous densities** (``gaussian``, ``gaussian-learned``, ``laplace``,
      ``continuous-bernoulli``) on 8-bit data scaled to the grid ``k/255``: a
      density ``p`` over [0, 1] assigns the bin of width ``Delta = 1/255`` around a
      grid value about ``p(x) Delta`` of probability, so

      .. math::

          -\log P(k) \approx -\log p(x) + D \log 255 .

      The correction is ``D log 255``, not the ``D log 256`` found in the
      literature: those numbers scale pixels as ``(k + u) / 256`` (bins of
      width 1/256), while this library scales them as ``k / 255`` (bins of width
      1/255, the same bins the discretized logistic integrates over). The two
      differ by ``log2(256/255) ~ 0.0056`` bits per dimension.

      How good the approximation is: with uniform dequantisation (training and
      evaluating the density on ``x + u Delta``, ``u ~ U(-1/2, 1/2)``) the corrected
      number is an upper bound on the code length of the discrete model
      ``P(k) = integral of p over bin k`` (Jensen), and exact when ``p`` is constant
      within each bin. Without dequantisation (this library evaluates ``p`` at
      the grid values) it is an approximation that holds when ``p`` is smooth at
      the bin scale (e.g. a Gaussian std well above 1/255), and is no bound: a
      density with spikes narrower than a bin can report too few bits.
    * ``data_is_8bit=False`` (continuous data): no correction for densities; the
      result is the density's negative log in bits per dimension, which is not a
      code length. Discrete likelihoods on non-8-bit data are refused for the
      discretized logistic (its pmf is over the 8-bit grid).

    Then ``bpd = nats / (D ln 2)``.

    Use the untempered value (``likelihood.scale = 1`` and latent weight
    ``beta = 1``); a tempered ELBO is not a bound on ``log p(x)``. ``num_dims``
    counts every dimension the nats cover: SimVAE's objective terms are per
    *item*, i.e. over all ``J`` views, so ``D = J * C * H * W`` for them.
    ``bernoulli`` on grey data is a cross-entropy, not a likelihood: its bits are
    comparable only with other Bernoulli numbers.

    Args:
        nats_per_item: negative log-likelihood (positive for a pmf) in nats per item.
        num_dims: D, the number of scalar values per item.
        likelihood: the likelihood object or its registered name.
        data_is_8bit: whether the data are 8-bit values on the grid ``k / 255``.

    Returns:
        Bits per dimension.

    Example:
        >>> bits_per_dim(-elbo_nats_per_item, num_views * 1 * 28 * 28, likelihood="gaussian")
    """
    if isinstance(num_dims, bool) or not isinstance(num_dims, int) or num_dims < 1:
        raise ValueError(f"num_dims must be a positive integer, got {num_dims!r}")
    nats = float(nats_per_item)
    if not math.isfinite(nats):
        raise ValueError(f"nats_per_item must be finite, got {nats_per_item!r}")
    discrete = _is_discrete(likelihood)
    eight_bit_only = likelihood == "discretized-logistic" or isinstance(
        likelihood, DiscretizedLogisticLikelihood
    )
    if eight_bit_only and not data_is_8bit:
        raise ValueError(
            "the discretized-logistic likelihood is a pmf over 8-bit values k/255, but data_is_8bit=False"
        )
    if not discrete and data_is_8bit:
        nats += num_dims * math.log(NUM_LEVELS - 1)
    return nats / (num_dims * math.log(2))
