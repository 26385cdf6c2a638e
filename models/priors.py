"""Priors over latent vectors: p(y) for content, p(z | y) for views, p(z) for a VAE.

A prior is a small ``torch.nn.Module`` (so learned parameters live in the model's
``state_dict``) that returns a Pyro distribution with one event dimension of
size ``latent_dim`` for a requested batch shape. Priors that are Gaussian also
expose their mean and precision, which is what lets SimVAE use the exact
conjugate posterior for y (see :mod:`pssl.models.simvae`); every other prior
answers ``None`` and SimVAE's ``y_guide=auto`` then picks the amortised guide.

Two registries choose them by name:

* ``PRIORS``: priors over a free latent vector (p(y) in SimVAE, p(z) in a VAE):
  ``gaussian``, ``flat``, ``laplace``, ``studentt``, ``mixture``, ``gmm`` (the
  mixture with an explicit, enumerated component site) and, for a VAE only,
  ``vampprior``.
* ``VIEW_PRIORS``: conditional priors p(z | y) centred on the content latent:
  ``gaussian``, ``laplace``, ``studentt``.

Any Pyro distribution over a ``latent_dim`` vector can be used as well, from
Python, through :class:`DistributionPrior` (it has no registered name, since a
distribution object cannot come from the command line)::

    prior = DistributionPrior(dist.MultivariateNormal(torch.zeros(4), covariance_matrix=cov))
    model = SimVAE(encoder, decoder, prior, GaussianViewPrior(4), BernoulliLikelihood())

Framework arguments: a registered factory's positional arguments without
defaults are supplied by the framework, not the user: every prior gets
``latent_dim``; a prior that declares ``image_shape`` (the VampPrior, whose
pseudo-inputs are images) gets the data's ``(C, H, W)`` through
:func:`build_prior`. A prior that needs the model's encoder sets
``needs_encoder = True``; the model that owns it then calls
:meth:`LatentPrior.bind` with its encoder once, at construction.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch import nn

from pssl.checks import positive_int, positive_number
from pssl.models import sites
from pssl.registry import Entry, Registry

PRIORS: Registry[LatentPrior] = Registry("prior")
VIEW_PRIORS: Registry[ViewPrior] = Registry("view prior", key="view_prior")

REFERENCE_VIEW_VARIANCE = 0.15
"""sigma_zy^2 of the reference setup; the default variance of every view prior."""


def _check_positive(value: float, where: str) -> float:
    return positive_number(value, where)


def _check_count(value: int, where: str) -> int:
    return positive_int(value, where)


class LatentPrior(nn.Module):
    """Base class for a prior over a ``latent_dim`` vector.

    Attributes:
        latent_dim: size of the latent vector (the event dimension).
        proper: False for improper priors (flat), which have a log-density but
            cannot be sampled.
        needs_encoder: True for priors defined through the model's encoder
            (the VampPrior); the owning model calls :meth:`bind` once.
        enumerated: True for priors whose Pyro program (:meth:`pyro_sample`) has a
            discrete site marked ``infer={"enumerate": "parallel"}``; only an
            enumerating ELBO (``TraceEnum_ELBO``) fits them.
    """

    proper: bool = True
    needs_encoder: bool = False
    enumerated: bool = False

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        self.latent_dim = latent_dim

    def distribution(self, batch_shape: tuple[int, ...]) -> dist.TorchDistribution:
        """The prior with batch shape ``batch_shape`` and event shape ``(latent_dim,)``."""
        raise NotImplementedError

    def pyro_sample(self, name: str, batch_shape: tuple[int, ...]) -> torch.Tensor:
        """Write the prior into the running Pyro program as site ``name``; return its value.

        The default is the single site ``pyro.sample(name, self.distribution(batch_shape))``.
        A prior with auxiliary latent sites (the ``gmm`` prior's component) writes
        them here too, so a model stays one line whatever its prior.

        Args:
            name: the site name of the latent vector (``y`` in SimVAE, ``z`` in a VAE).
            batch_shape: the site's batch shape inside the model's plates.

        Returns:
            The value at ``name``, shape ``batch_shape + (latent_dim,)``.
        """
        return pyro.sample(name, self.distribution(batch_shape))

    def gaussian(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(mean, precision)``, each ``(latent_dim,)``, if the prior is a diagonal Gaussian.

        A flat prior is the limit of zero precision. ``None`` means no Gaussian form
        (SimVAE then cannot use the exact y-guide).
        """
        return None

    def bind(self, encoder: nn.Module) -> None:
        """Give the prior the model's encoder ``q(z | x)``; a no-op unless ``needs_encoder``."""

    def _anchor(self) -> torch.Tensor:
        """A tensor on the module's device and dtype, for building constants."""
        for tensor in self.buffers():
            return tensor
        for tensor in self.parameters():
            return tensor
        return torch.zeros(())


@PRIORS.register(
    "gaussian", help="isotropic Gaussian N(0, scale^2 I); conjugate, so SimVAE's y-guide is exact"
)
class GaussianPrior(LatentPrior):
    """p(v) = N(v; 0, scale^2 I)."""

    def __init__(self, latent_dim: int, *, scale: float = 1.0) -> None:
        super().__init__(latent_dim)
        scale = _check_positive(scale, "prior.scale")
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.full((latent_dim,), scale))

    def distribution(self, batch_shape: tuple[int, ...]) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).expand(tuple(batch_shape) + (self.latent_dim,)).to_event(1)

    def gaussian(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loc, self.scale.pow(-2)


@PRIORS.register(
    "flat", help="improper flat prior, log p = 0 (the uniform-over-items reading of p(y)); not samplable"
)
class FlatPrior(LatentPrior):
    """Improper p(v) ∝ 1. Its Gaussian form has zero precision."""

    proper = False

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.register_buffer("loc", torch.zeros(latent_dim))

    def distribution(self, batch_shape: tuple[int, ...]) -> dist.TorchDistribution:
        return dist.ImproperUniform(
            dist.constraints.real,
            batch_shape=torch.Size(batch_shape),
            event_shape=torch.Size([self.latent_dim]),
        )

    def gaussian(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loc, torch.zeros_like(self.loc)


@PRIORS.register(
    "laplace", help="factorised Laplace(0, scale) per coordinate (sparse, heavier tails); non-conjugate"
)
class LaplacePrior(LatentPrior):
    """``p(v) = prod_k Laplace(v_k; 0, b) = prod_k exp(-|v_k| / b) / (2 b)``, with ``b = scale``.

    Variance ``2 b^2`` per coordinate. No Gaussian form, so SimVAE's ``y_guide=auto``
    picks the amortised guide.
    """

    def __init__(self, latent_dim: int, *, scale: float = 1.0) -> None:
        super().__init__(latent_dim)
        scale = _check_positive(scale, "prior.scale")
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.full((latent_dim,), scale))

    def distribution(self, batch_shape: tuple[int, ...]) -> dist.TorchDistribution:
        return dist.Laplace(self.loc, self.scale).expand(tuple(batch_shape) + (self.latent_dim,)).to_event(1)


@PRIORS.register(
    "studentt", help="factorised Student-t(df, 0, scale) per coordinate (heavy tails; df > 0); non-conjugate"
)
class StudentTPrior(LatentPrior):
    r"""p(v) = prod_k t_df(v_k; 0, s): a Student-t per coordinate with ``df`` degrees of freedom.

    .. math::

        \log t_\nu(v; 0, s) = \log\Gamma(\tfrac{\nu+1}{2}) - \log\Gamma(\tfrac{\nu}{2})
            - \tfrac12 \log(\nu\pi s^2) - \tfrac{\nu+1}{2}\log(1 + v^2 / (\nu s^2)).

    Small ``df`` gives heavy tails (df = 1 is Cauchy); ``df -> inf`` recovers N(0, s^2).

    Raises:
        ValueError: if ``df`` or ``scale`` is not a positive finite number.
    """

    def __init__(self, latent_dim: int, *, df: float = 3.0, scale: float = 1.0) -> None:
        super().__init__(latent_dim)
        df = _check_positive(df, "prior.df")
        scale = _check_positive(scale, "prior.scale")
        self.register_buffer("df", torch.full((latent_dim,), df))
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.full((latent_dim,), scale))

    def distribution(self, batch_shape: tuple[int, ...]) -> dist.TorchDistribution:
        shape = tuple(batch_shape) + (self.latent_dim,)
        return dist.StudentT(self.df, self.loc, self.scale).expand(shape).to_event(1)


def _inverse_softplus(value: float) -> float:
    return value + math.log(-math.expm1(-value))


@PRIORS.register(
    "mixture",
    help="learned mixture of K diagonal Gaussians (means, scales, weights); means start N(0, spread^2); "
    "non-conjugate",
)
class MixturePrior(LatentPrior):
    r"""A learned mixture of ``K`` diagonal Gaussians:

    .. math::

        p(v) = \sum_{k=1}^K \pi_k\, N(v; m_k, \operatorname{diag} s_k^2), \qquad
        \pi = \operatorname{softmax}(\ell), \quad s_k = \operatorname{softplus}(r_k) + s_{\min}.

    Learned parameters: ``means`` ``(K, d)`` (initialised from ``N(0, spread^2)``
    with the global torch generator, which the trainer seeds), ``raw_scales``
    ``(K, d)`` (initialised so every ``s_k = component_scale``) and ``logits``
    ``(K,)`` (initialised to equal weights). The floor ``s_min = 1e-3`` keeps a
    component from collapsing onto one encoder mean.

    The distribution is Pyro's ``MixtureSameFamily(Categorical(logits),
    Independent(Normal(means, scales), 1))``. It has no reparameterised sampler,
    which a model site does not need (the objective scores the guide's value
    under it); samples for ``sample_images`` are drawn without gradients. No
    Gaussian form: SimVAE's ``y_guide=auto`` picks the amortised guide.
    """

    min_scale = 1e-3

    def __init__(
        self,
        latent_dim: int,
        *,
        components: int = 10,
        spread: float = 1.0,
        component_scale: float = 0.5,
    ) -> None:
        super().__init__(latent_dim)
        components = _check_count(components, "prior.components")
        spread = _check_positive(spread, "prior.spread")
        component_scale = _check_positive(component_scale, "prior.component_scale")
        if component_scale <= self.min_scale:
            raise ValueError(f"prior.component_scale must exceed {self.min_scale}, got {component_scale!r}")
        self.num_components = components
        self.means = nn.Parameter(torch.randn(components, latent_dim) * spread)
        raw = _inverse_softplus(component_scale - self.min_scale)
        self.raw_scales = nn.Parameter(torch.full((components, latent_dim), raw))
        self.logits = nn.Parameter(torch.zeros(components))

    def scales(self) -> torch.Tensor:
        """Component standard deviations ``(K, d)``."""
        return F.softplus(self.raw_scales) + self.min_scale

    def distribution(self, batch_shape: tuple[int, ...]) -> dist.TorchDistribution:
        return gaussian_mixture(self.means, self.scales(), self.logits, batch_shape)


@PRIORS.register(
    "gmm",
    help="mixture of K diagonal Gaussians with an explicit component c ~ Categorical(pi), "
    "y | c ~ N(mu_c, diag s_c^2); c is summed out exactly by objective=traceenum; "
    "the model's clusters are argmax_c p(c | x)",
)
class GaussianMixturePrior(MixturePrior):
    r"""A learned Gaussian mixture written with its discrete component as a Pyro site.

    .. math::

        c \sim \operatorname{Categorical}(\pi), \qquad
        v \mid c \sim N(m_c, \operatorname{diag} s_c^2), \qquad
        \pi = \operatorname{softmax}(\ell), \quad s_c = \operatorname{softplus}(r_c) + s_{\min},

    with the parameters and floor of :class:`MixturePrior` (``means`` ``(K, d)``,
    ``raw_scales`` ``(K, d)``, ``logits`` ``(K,)``) but initialised closer together
    (means ``N(0, 0.1^2)``, scales 0.3: see ``__init__``).
    The marginal density is the same; what differs is the Pyro program
    (:meth:`pyro_sample`): site ``c`` (:data:`~pssl.models.sites.CONTENT_COMPONENT`)
    is sampled first, with batch shape ``batch_shape`` (one component per item in
    SimVAE) and ``infer={"enumerate": "parallel"}``, then the latent given it.

    Enumeration: under ``TraceEnum_ELBO(max_plate_nesting=2)`` (the items and
    views plates, dims -2 and -1) the value of ``c`` is ``arange(K)`` shaped
    ``(K, 1, 1)``, in dim -3 left of the plates; ``m_c`` and ``s_c`` are gathered
    to ``(K, 1, 1, d)`` and the latent's log-density has shape ``(K, B, 1)``.
    Nothing downstream of the latent sees dim -3, because the latent's value
    comes from the guide (SimVAE's y-guide; a VAE's encoder), not from ``c``. The
    ELBO then holds, per item, the exact sum over components

    .. math::

        \log \sum_{c=1}^K \pi_c\, N(v; m_c, \operatorname{diag} s_c^2),

    i.e. ``c`` is marginalised in the model; no guide needs a site ``c``, and a
    guide that has one is not required. An ELBO that does not enumerate
    (``Trace_ELBO``) would sample one ``c`` from the prior and score ``v`` under
    that component only: a looser bound with no gradient for ``pi``, so
    objectives refuse it.

    Without enumeration (prior sampling, ``pyro.infer.Predictive``) ``c`` is drawn
    from ``Categorical(pi)`` with shape ``batch_shape`` and the latent from its
    component, which is ancestral sampling from the same prior.

    Clusters: :meth:`component_log_posterior` gives ``log p(c | v)``, optionally
    for a latent observed with extra Gaussian noise (SimVAE integrates y out of
    ``p(c | z)`` this way, see :meth:`pssl.models.simvae.SimVAE.cluster`).
    """

    enumerated = True

    def __init__(
        self,
        latent_dim: int,
        *,
        components: int = 10,
        spread: float = 0.1,
        component_scale: float = 0.3,
    ) -> None:
        # Defaults: overlapping components near the origin, where the encoder starts, so every
        # component takes responsibility for some items and follows them as they spread. With
        # the mixture's defaults (spread 1, scale 0.5) the components away from the origin got
        # no items and every digit fell into one cluster (validation clustering, digits, seed 0,
        # 30 epochs); spread 0.1 / scale 0.3 was the best of six settings tried there.
        super().__init__(latent_dim, components=components, spread=spread, component_scale=component_scale)

    def pyro_sample(self, name: str, batch_shape: tuple[int, ...]) -> torch.Tensor:
        component = pyro.sample(
            sites.CONTENT_COMPONENT,
            dist.Categorical(logits=self.logits).expand(torch.Size(batch_shape)),
            infer={"enumerate": "parallel"},
        )
        # (..., ) component ids -> (..., d) parameters; under enumeration (K, 1, 1) -> (K, 1, 1, d).
        return pyro.sample(name, dist.Normal(self.means[component], self.scales()[component]).to_event(1))

    def component_log_posterior(
        self, value: torch.Tensor, extra_variance: float | torch.Tensor = 0.0
    ) -> torch.Tensor:
        r"""``log p(c = k | v)`` for each component, by Bayes' rule.

        .. math::

            \log p(c = k \mid v) = \log \pi_k + \log N(v; m_k, \operatorname{diag}(s_k^2 + \tau^2))
                - \log \sum_{k'} \pi_{k'} N(v; m_{k'}, \operatorname{diag}(s_{k'}^2 + \tau^2)),

        where ``tau^2 = extra_variance`` is the variance of Gaussian noise between the
        mixture's latent and ``v`` (0: ``v`` is the latent itself).

        Args:
            value: ``(..., d)`` latent vectors.
            extra_variance: scalar ``tau^2 >= 0``.

        Returns:
            ``(..., K)`` log-probabilities, normalised over the last dimension.

        Raises:
            ValueError: if ``value``'s last dimension is not ``latent_dim``.
        """
        if value.shape[-1:] != (self.latent_dim,):
            raise ValueError(f"value must have shape (..., {self.latent_dim}), got {tuple(value.shape)}")
        std = (self.scales().pow(2) + extra_variance).sqrt()
        log_joint = F.log_softmax(self.logits, dim=-1) + dist.Normal(self.means, std).log_prob(
            value.unsqueeze(-2)
        ).sum(-1)
        return log_joint - log_joint.logsumexp(dim=-1, keepdim=True)


def gaussian_mixture(
    locs: torch.Tensor, scales: torch.Tensor, logits: torch.Tensor, batch_shape: tuple[int, ...]
) -> dist.TorchDistribution:
    """``sum_k softmax(logits)_k N(locs_k, diag scales_k^2)`` over ``(d,)`` vectors, batch ``batch_shape``.

    Args:
        locs, scales: ``(K, d)``.
        logits: ``(K,)``.
    """
    mixture = dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(locs, scales).to_event(1))
    return mixture.expand(torch.Size(batch_shape)) if batch_shape else mixture


@PRIORS.register(
    "vampprior",
    help="VAE only: p(z) = mean_k q(z | u_k) over K learned pseudo-images u_k pushed through the encoder",
)
class VampPrior(LatentPrior):
    r"""The VampPrior (Tomczak & Welling, 2018): the aggregate posterior of ``K`` learned pseudo-inputs.

    .. math::

        p(z) = \frac1K \sum_{k=1}^K q_\phi(z \mid u_k), \qquad
        u_k = \operatorname{sigmoid}(w_k) \in (0, 1)^{C \times H \times W},

    where ``q_phi`` is the model's own amortised encoder and the pseudo-image
    logits ``w`` ``(K, C, H, W)`` are learned (initialised ``N(0, init_std^2)``,
    i.e. grey images around 0.5).

    Binding: the prior is defined through the encoder, which belongs to the
    model, so the model calls :meth:`bind` with its encoder at construction
    (``VAE`` does; SimVAE refuses this prior, since its p(y) is not a prior over
    encoder outputs of single images). The encoder is referenced, not
    registered as a sub-module, so its parameters appear once in the model's
    ``state_dict`` (under the model's ``encoder``). The encoder must return
    ``(loc, scale)``, each ``(K, latent_dim)``, for ``(K, C, H, W)`` images. An
    encoder with batch normalisation in training mode also sees the
    pseudo-inputs as a batch of their own.

    Args:
        latent_dim: size of z (framework-supplied).
        image_shape: ``(C, H, W)`` of the data (framework-supplied).
        components: K, the number of pseudo-inputs.
        init_std: standard deviation of the initial pseudo-image logits.
    """

    needs_encoder = True

    def __init__(
        self,
        latent_dim: int,
        image_shape: tuple[int, int, int],
        *,
        components: int = 50,
        init_std: float = 0.5,
    ) -> None:
        super().__init__(latent_dim)
        components = _check_count(components, "prior.components")
        init_std = _check_positive(init_std, "prior.init_std")
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (channels, height, width), got {image_shape!r}")
        self.image_shape = image_shape
        self.num_components = components
        self.pseudo_logits = nn.Parameter(torch.randn(components, *image_shape) * init_std)
        object.__setattr__(self, "_encoder", None)  # a reference, not a sub-module (see class docstring)

    def bind(self, encoder: nn.Module) -> None:
        encoder_dim = getattr(encoder, "latent_dim", self.latent_dim)
        if encoder_dim != self.latent_dim:
            raise ValueError(
                f"vampprior was built for latent_dim={self.latent_dim} but the encoder gives {encoder_dim}"
            )
        object.__setattr__(self, "_encoder", encoder)

    def pseudo_inputs(self) -> torch.Tensor:
        """The pseudo-images ``u`` ``(K, C, H, W)`` in (0, 1)."""
        return torch.sigmoid(self.pseudo_logits)

    def distribution(self, batch_shape: tuple[int, ...]) -> dist.TorchDistribution:
        if self._encoder is None:
            raise ValueError(
                "vampprior is not bound to an encoder: it is a VAE prior (model=vae), and the VAE binds it; "
                "call prior.bind(encoder) when using it elsewhere"
            )
        loc, scale = self._encoder(self.pseudo_inputs())
        logits = torch.zeros(self.num_components, dtype=loc.dtype, device=loc.device)
        return gaussian_mixture(loc, scale, logits, batch_shape)


class DistributionPrior(LatentPrior):
    """A user-supplied Pyro distribution over a ``latent_dim`` vector, as a prior.

    Accepts a Pyro distribution with ``batch_shape == ()`` and ``event_shape ==
    (latent_dim,)`` (e.g. ``dist.MultivariateNormal(loc, cov)``,
    ``dist.StudentT(2.0, 0.0, 1.0).expand([d]).to_event(1)``), or a callable with no
    arguments returning one. A callable that is an ``nn.Module`` is registered as
    a sub-module, so its parameters are learned with the model and saved in its
    ``state_dict``; that is also the way to build a prior whose tensors follow
    ``model.to(device)`` (a fixed distribution object keeps the tensors it was
    made with, so create it on the training device).

    ``gaussian()`` recognises a diagonal Gaussian (``dist.Normal(loc, scale).to_event(1)``),
    so SimVAE's ``y_guide=auto`` can still pick the exact guide; anything else
    answers ``None`` (amortised guide). ``dist.ImproperUniform`` is treated as
    improper (no samples).

    Not registered by name: a distribution object cannot come from the command
    line. Pass it wherever a prior is accepted (``SimVAE``, ``VAE``,
    :func:`build_prior`) and train with ``train(config, model=...)``.

    Raises:
        TypeError: for something that is not a Pyro distribution (or a callable
            returning one); plain ``torch.distributions`` objects cannot be
            Pyro sample sites.
        ValueError: for a batch shape other than ``()`` or an event shape other
            than one dimension.
    """

    def __init__(self, distribution: dist.TorchDistribution | Callable[[], dist.TorchDistribution]) -> None:
        if isinstance(distribution, TorchDistributionMixin):
            fixed, source = distribution, None
        elif isinstance(distribution, torch.distributions.Distribution):
            raise TypeError(
                f"DistributionPrior needs a Pyro distribution "
                f"(pyro.distributions.{type(distribution).__name__}), "
                f"got torch.distributions.{type(distribution).__name__}"
            )
        elif callable(distribution):
            fixed, source = None, distribution
        else:
            raise TypeError(
                "DistributionPrior takes a Pyro distribution over a latent vector or a callable "
                f"returning one, got {type(distribution).__name__}"
            )
        example = fixed if fixed is not None else source()
        _check_user_distribution(example)
        super().__init__(int(example.event_shape[0]))
        self.proper = not isinstance(example, dist.ImproperUniform)
        if isinstance(source, nn.Module):
            self.source = source
        else:
            object.__setattr__(self, "source", source)
        object.__setattr__(self, "fixed", fixed)

    def base(self) -> dist.TorchDistribution:
        """The user's distribution, batch shape ``()`` and event shape ``(latent_dim,)``."""
        if self.fixed is not None:
            return self.fixed
        made = self.source()
        _check_user_distribution(made)
        if made.event_shape[0] != self.latent_dim:
            raise ValueError(
                f"the prior callable returned event shape {tuple(made.event_shape)}, "
                f"earlier ({self.latent_dim},)"
            )
        return made

    def distribution(self, batch_shape: tuple[int, ...]) -> dist.TorchDistribution:
        base = self.base()
        return base.expand(torch.Size(batch_shape)) if batch_shape else base

    def gaussian(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        base = self.base()
        if (
            isinstance(base, dist.Independent)
            and base.reinterpreted_batch_ndims == 1
            and type(base.base_dist) is dist.Normal
        ):
            loc, scale = base.base_dist.loc, base.base_dist.scale
            shape = (self.latent_dim,)
            return loc.expand(shape), scale.expand(shape).pow(-2)
        return None

    def extra_repr(self) -> str:
        if self.fixed is not None:
            return f"{type(self.fixed).__name__}, latent_dim={self.latent_dim}"
        if isinstance(self.source, nn.Module):
            return f"latent_dim={self.latent_dim}"  # the module is printed as the child "source"
        return f"{getattr(self.source, '__name__', 'callable')}(), latent_dim={self.latent_dim}"


def _check_user_distribution(candidate: object) -> None:
    if not isinstance(candidate, TorchDistributionMixin):
        raise TypeError(
            "a DistributionPrior callable must return a Pyro distribution (pyro.distributions.*), "
            f"got {type(candidate).__name__}"
        )
    if len(candidate.event_shape) != 1:
        raise ValueError(
            f"a prior must be a distribution over a vector (event shape (latent_dim,)), got event shape "
            f"{tuple(candidate.event_shape)}; e.g. use dist.Normal(loc, scale).to_event(1) "
            "for a factorised prior"
        )
    if len(candidate.batch_shape) != 0:
        raise ValueError(
            f"a prior must be one distribution (batch shape ()), "
            f"got batch shape {tuple(candidate.batch_shape)}"
        )


def as_prior(
    prior: LatentPrior | dist.TorchDistribution | Callable[[], dist.TorchDistribution],
) -> LatentPrior:
    """A :class:`LatentPrior` as is; a Pyro distribution (or a callable returning one) as a
    :class:`DistributionPrior`."""
    if isinstance(prior, LatentPrior):
        return prior
    return DistributionPrior(prior)


# --- view priors p(z | y) ---------------------------------------------------------------


class ViewPrior(nn.Module):
    """Base class for p(z | y): a distribution over each view's latent given its item's y."""

    def distribution(self, content: torch.Tensor) -> dist.TorchDistribution:
        """p(z | y) with batch shape ``content.shape[:-1]`` and event shape ``content.shape[-1:]``."""
        raise NotImplementedError

    def gaussian_scale(self) -> torch.Tensor | None:
        """sigma_zy (scalar tensor) if p(z | y) = N(y, sigma_zy^2 I), else ``None``."""
        return None

    def _init_scale(self, scale: float, learn: bool) -> None:
        """Store ``log scale`` as a parameter (``learn``) or a buffer."""
        log_scale = torch.tensor(math.log(_check_positive(scale, "view_prior.scale")))
        if learn:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def scale(self) -> torch.Tensor:
        """The (scalar) scale parameter of p(z | y)."""
        return self.log_scale.exp()


@VIEW_PRIORS.register(
    "gaussian", help="p(z|y) = N(y, scale^2 I); scale^2 = 0.15 as in the reference; learn=true fits it"
)
class GaussianViewPrior(ViewPrior):
    """p(z | y) = N(z; y, sigma_zy^2 I), with sigma_zy fixed or learned (positive via log)."""

    def __init__(
        self, latent_dim: int, *, scale: float = REFERENCE_VIEW_VARIANCE**0.5, learn: bool = False
    ) -> None:
        super().__init__()
        self._init_scale(scale, learn)

    def distribution(self, content: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(content, self.scale().expand_as(content)).to_event(1)

    def gaussian_scale(self) -> torch.Tensor:
        return self.scale()


@VIEW_PRIORS.register(
    "laplace",
    help="p(z|y) = Laplace(y, scale) per coordinate; default variance 2 scale^2 = 0.15; non-conjugate",
)
class LaplaceViewPrior(ViewPrior):
    """p(z | y) = prod_k Laplace(z_k; y_k, b), ``b = scale`` fixed or learned.

    The default ``b = sqrt(0.075)`` matches the reference Gaussian's variance
    ``2 b^2 = 0.15``. Non-conjugate: SimVAE's ``y_guide=auto`` picks the amortised guide.
    """

    def __init__(
        self, latent_dim: int, *, scale: float = (REFERENCE_VIEW_VARIANCE / 2) ** 0.5, learn: bool = False
    ) -> None:
        super().__init__()
        self._init_scale(scale, learn)

    def distribution(self, content: torch.Tensor) -> dist.TorchDistribution:
        return dist.Laplace(content, self.scale().expand_as(content)).to_event(1)


@VIEW_PRIORS.register(
    "studentt",
    help="p(z|y) = Student-t(df, y, scale) per coordinate (heavy-tailed style; df > 0); non-conjugate",
)
class StudentTViewPrior(ViewPrior):
    """p(z | y) = prod_k t_df(z_k; y_k, s), ``s = scale`` fixed or learned, ``df`` fixed.

    Raises:
        ValueError: if ``df`` or ``scale`` is not a positive finite number.
    """

    def __init__(
        self,
        latent_dim: int,
        *,
        df: float = 3.0,
        scale: float = REFERENCE_VIEW_VARIANCE**0.5,
        learn: bool = False,
    ) -> None:
        super().__init__()
        self.register_buffer("df", torch.tensor(_check_positive(df, "view_prior.df")))
        self._init_scale(scale, learn)

    def distribution(self, content: torch.Tensor) -> dist.TorchDistribution:
        scale = self.scale().expand_as(content)
        return dist.StudentT(self.df.expand_as(content), content, scale).to_event(1)


# --- building by name ---------------------------------------------------------------------


def _framework_args(entry: Entry, kind: str, available: dict[str, object]) -> dict[str, object]:
    """The framework arguments (parameters without defaults) ``entry``'s factory declares."""
    wanted = [k for k, p in entry.parameters().items() if p.default is inspect.Parameter.empty]
    args = {}
    for key in wanted:
        if available.get(key) is None:
            raise ValueError(f"{kind} {entry.name!r} needs {key}, which was not supplied")
        args[key] = available[key]
    return args


def build_prior(
    name: str | LatentPrior | dist.TorchDistribution,
    latent_dim: int,
    options: dict | None = None,
    *,
    image_shape: tuple[int, int, int] | None = None,
) -> LatentPrior:
    """Build a registered prior by name, or pass a ready prior through.

    Args:
        name: a registered name (see ``PRIORS``), a :class:`LatentPrior` (returned
            as is) or a Pyro distribution (wrapped in :class:`DistributionPrior`).
        latent_dim: size of the latent vector.
        options: user options of the registered prior.
        image_shape: ``(C, H, W)`` of the data, for priors that need it (``vampprior``).

    Raises:
        ValueError: for an unknown name (listing the accepted ones), a bad
            option, or a ready prior of another ``latent_dim``.
    """
    if isinstance(name, (LatentPrior, TorchDistributionMixin)):
        prior = as_prior(name)
        if prior.latent_dim != latent_dim:
            raise ValueError(f"the prior is over {prior.latent_dim} dimensions, but latent_dim={latent_dim}")
        return prior
    entry = PRIORS.entry(name)
    framework = _framework_args(entry, "prior", {"latent_dim": latent_dim, "image_shape": image_shape})
    return PRIORS.build(name, options, **framework)


def build_view_prior(name: str | ViewPrior, latent_dim: int, options: dict | None = None) -> ViewPrior:
    """Build a registered view prior by name, or pass a ready :class:`ViewPrior` through."""
    if isinstance(name, ViewPrior):
        return name
    return VIEW_PRIORS.build(name, options, latent_dim=latent_dim)
