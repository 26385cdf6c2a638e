"""The interface every method implements, and the registry that builds methods by name.

A method is a Pyro model/guide pair over a batch of augmented views plus an
encoder that maps images to the representation used for evaluation. The
training loop, evaluation and diagnostics only use this interface:

* ``model(views=None, index=None, num_items=None)`` and
  ``guide(views, index=None, num_items=None)``: Pyro programs over tensors, with
  the site and plate names of :mod:`pssl.models.sites`. ``views`` is
  ``(B, J, C, H, W)``; ``index`` the ``(B,)`` positions of the items in the data
  set (default ``arange(B)``); ``num_items`` the data-set size N (default B),
  which scales every log-density by ``N / B`` through the items plate. Both
  register the method's networks with Pyro's param store (the guide the
  inference networks named in :attr:`SSLModel.guide_networks`, the model the
  rest), so plain ``pyro.infer.SVI(m.model, m.guide, optim, elbo)`` trains every
  parameter, and any Pyro ELBO drives them. Without ``views`` (or with
  ``observe=False``) a generative model *samples* x, so
  ``pyro.infer.Predictive`` gives prior- and posterior-predictive views. A
  :class:`ViewBatch` passed as the first argument is accepted as well
  (``model(batch)``).
* ``encode(images)``: ``(B, C, H, W) -> (B, representation_dim)``, the frozen
  representation (the encoder mean for generative models, the backbone output
  before the projection head for discriminative ones).
* ``check_data(images)``: raise before training if the data cannot be modelled.
* ``after_step()``: a hook called after each optimiser step (MoCo's momentum
  update and queue, CLIP's logit-scale clamp live there, not in the loop). The
  training loop calls it; a plain-Pyro user calls it after every ``svi.step``.

Generative methods also offer ``reconstruct`` and ``sample_images``; a method
whose model has a discrete cluster latent sets ``num_clusters`` and offers
``cluster(images)`` (the evaluation scores it like a clustering).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from pyro.distributions import constraints
from torch import nn

from pssl.config import Component
from pssl.registry import Registry

MODELS: Registry[SSLModel] = Registry("model")


@dataclass
class ViewBatch:
    """One minibatch as the model and guide see it.

    Attributes:
        views: ``(B, J, C, H, W)`` augmented views, floats; ``None`` when the model
            is to sample them (prior or posterior predictive).
        index: ``(B,)`` int64 positions of the items in the training set
            (the ``subsample`` of the items plate).
        num_items: N, the training-set size (the items plate's ``size``).
        extras: optional per-batch tensors a method may need (e.g. a second
            modality), keyed by name.
        view_count: J when ``views`` is ``None`` (ignored otherwise).
    """

    views: torch.Tensor | None
    index: torch.Tensor
    num_items: int
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    view_count: int | None = None

    def __post_init__(self) -> None:
        if self.views is None:
            if (
                isinstance(self.view_count, bool)
                or not isinstance(self.view_count, int)
                or self.view_count < 1
            ):
                raise ValueError(
                    f"without views, view_count must be a positive integer, got {self.view_count!r}"
                )
            if self.index.dim() != 1:
                raise ValueError(f"index must have shape (batch,), got {tuple(self.index.shape)}")
        else:
            if self.views.dim() != 5:
                raise ValueError(
                    "views must have shape (batch, views, channels, height, width), "
                    f"got {tuple(self.views.shape)}"
                )
            if self.index.shape != self.views.shape[:1]:
                raise ValueError(
                    f"index shape {tuple(self.index.shape)} does not match batch {self.views.shape[0]}"
                )
        if self.num_items < self.index.shape[0]:
            raise ValueError(f"num_items={self.num_items} is smaller than the batch {self.index.shape[0]}")

    @property
    def batch_size(self) -> int:
        return self.index.shape[0]

    @property
    def num_views(self) -> int:
        return self.views.shape[1] if self.views is not None else int(self.view_count)

    @property
    def observed(self) -> bool:
        """Whether the views are data (observed) rather than to be sampled."""
        return self.views is not None

    def to(self, device: torch.device | str) -> ViewBatch:
        return ViewBatch(
            None if self.views is None else self.views.to(device),
            self.index.to(device),
            self.num_items,
            {k: v.to(device) for k, v in self.extras.items()},
            self.view_count,
        )


def make_view_batch(
    views: torch.Tensor | ViewBatch | None = None,
    index: torch.Tensor | None = None,
    num_items: int | torch.Tensor | None = None,
    *,
    num_views: int | None = None,
    observe: bool = True,
    extras: dict[str, torch.Tensor] | None = None,
    default_num_views: int = 2,
) -> ViewBatch:
    """The :class:`ViewBatch` that ``model``/``guide`` arguments describe.

    * ``views`` given: ``B, J`` from its shape; ``index`` defaults to ``arange(B)`` and
      ``num_items`` to ``B`` (the batch is the whole data set).
    * no ``views``: ``B = len(index)`` if ``index`` is given, else ``num_items`` (default 1)
      items ``arange(N)``; ``J = num_views`` (default ``default_num_views``).
    * ``observe=False`` keeps the shapes of ``views`` but drops the values, so the model
      samples x where it would have observed it (posterior predictive).
    * a :class:`ViewBatch` as ``views`` is returned as it is (with ``observe=False``,
      without its views).

    Raises:
        ValueError: for inconsistent shapes or sizes.
        TypeError: for arguments of the wrong type.
    """
    if isinstance(views, ViewBatch):
        if index is not None or num_items is not None:
            raise TypeError("pass either a ViewBatch or views/index/num_items, not both")
        batch = views
        if not observe and batch.views is not None:
            batch = ViewBatch(None, batch.index, batch.num_items, batch.extras, batch.num_views)
        return batch
    if views is not None and not isinstance(views, torch.Tensor):
        raise TypeError(
            f"views must be a (batch, views, C, H, W) tensor or a ViewBatch, got {type(views).__name__}"
        )
    if isinstance(num_items, torch.Tensor):
        num_items = int(num_items)
    if num_items is not None and (
        isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 1
    ):
        raise ValueError(f"num_items must be a positive integer, got {num_items!r}")
    extras = dict(extras or {})
    if views is not None:
        if views.dim() != 5:
            raise ValueError(
                f"views must have shape (batch, views, channels, height, width), got {tuple(views.shape)}"
            )
        if index is None:
            index = torch.arange(views.shape[0], device=views.device)
        batch = ViewBatch(views, index, num_items if num_items is not None else views.shape[0], extras)
        if not observe:
            batch = ViewBatch(None, batch.index, batch.num_items, extras, batch.num_views)
        return batch
    if index is None:
        count = 1 if num_items is None else num_items
        index = torch.arange(count)
    return ViewBatch(
        None,
        index,
        num_items if num_items is not None else index.shape[0],
        extras,
        default_num_views if num_views is None else num_views,
    )


class _Registration:
    enabled = True


@contextmanager
def registration_suspended() -> Iterator[None]:
    """Within this block ``model``/``guide`` do not register their networks with Pyro.

    The registration only tells ``pyro.infer.SVI`` which tensors to optimise (a
    ``param`` site carries no density). A loop that optimises the method's
    parameters itself (pssl's trainer, with an ELBO that returns a differentiable
    loss) skips the per-call cost this way; the loss is the same.
    """
    previous = _Registration.enabled
    _Registration.enabled = False
    try:
        yield
    finally:
        _Registration.enabled = previous


PARAM_DIVIDER = "$$$"
"""Between a module's name and a parameter's name in Pyro's param store (as ``pyro.module``)."""


def register_parameters(prefix: str, named_parameters: Iterable[tuple[str, nn.Parameter]]) -> None:
    """Register trainable parameters with Pyro's param store and emit their ``param`` sites.

    The same registration as ``pyro.module(prefix, module)`` (names ``prefix$$$name``),
    with one difference: the module owns its parameters. An entry of the same name
    left in the store by another module (a method built earlier in the session, or
    a copy) is re-pointed at this module's tensor instead of silently shadowing
    it, so a second model built in one session trains too. The store keeps the
    parameter tensor itself (never a contiguous copy), so ``pyro.optim`` and the
    module update the same tensor.
    """
    store = pyro.get_param_store()
    held = store._params  # name -> unconstrained tensor
    for name, parameter in named_parameters:
        full_name = f"{prefix}{PARAM_DIVIDER}{name}"
        if held.get(full_name) is not parameter:
            if full_name in held:
                store._param_to_name.pop(held[full_name], None)
            held[full_name] = parameter
            store._param_to_name[parameter] = full_name
            store._constraints[full_name] = constraints.real
        pyro.param(full_name)


@dataclass
class ModelSpec:
    """What the framework tells a method factory: data shape and chosen parts.

    Attributes:
        image_shape: ``(C, H, W)`` of one view.
        latent_dim: size of z (and y).
        num_views: J.
        encoder, decoder, prior, view_prior, likelihood: the chosen components.
    """

    image_shape: tuple[int, int, int]
    latent_dim: int
    num_views: int
    encoder: Component
    decoder: Component
    prior: Component
    view_prior: Component
    likelihood: Component


_ENTRY = threading.local()


def entry_images(model: nn.Module, images: Any, *, where: str) -> torch.Tensor:
    """Images given to a public entry point, checked and converted as training converts its data.

    ``uint8`` images (``0..255``) become ``k / 255``; floating images must be finite
    and lie in ``[0, 1]``, except for a likelihood whose mean may leave it (an
    identity link on the real line). The result has the model's floating dtype and
    sits on its device.

    Args:
        model: the method (its first floating parameter gives dtype and device).
        images: ``(B, C, H, W)`` ``uint8`` or floating tensor.
        where: the entry point named in messages (``"encode"``).

    Raises:
        TypeError: for a non-tensor, or a dtype other than ``uint8`` or floating point.
        ValueError: for fewer than 3 dimensions, NaN or infinity, or floats outside
            that range (e.g. ``0..255`` floats: divide by 255 or pass ``uint8``).
    """
    from pssl.datasets.core import as_float_images

    name = f"{type(model).__name__}.{where}(images)"
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name}: images must be a torch.Tensor (B, C, H, W), got {type(images).__name__}")
    if images.ndim < 3:
        raise ValueError(f"{name}: images must have shape (B, C, H, W), got {tuple(images.shape)}")
    anchor = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = anchor.dtype if anchor is not None else torch.float32
    device = anchor.device if anchor is not None else images.device
    if images.is_floating_point() and images.numel():
        if not bool(torch.isfinite(images).all()):
            raise ValueError(f"{name}: images contain NaN or infinite values")
        low, high = float(images.min()), float(images.max())
        hint = " (0..255 values: divide by 255, or pass uint8)" if high > 1.0 else ""
        if _unit_interval_data(model) and (low < 0.0 or high > 1.0):
            raise ValueError(
                f"{name}: floating images must lie in [0, 1] as in training, got values in "
                f"[{low:.4g}, {high:.4g}]{hint}"
            )
    return as_float_images(images, dtype=dtype, device=device, name=f"{name}: images")


def _unit_interval_data(model: nn.Module) -> bool:
    """Whether the method's data lie in ``[0, 1]``: always for methods without a likelihood (they
    train on ``uint8`` data read as ``k / 255``); for generative ones, unless the likelihood's
    mean can leave ``[0, 1]`` (support on the real line and no sigmoid link)."""
    likelihood = getattr(model, "likelihood", None)
    if likelihood is None:
        return True
    support = str(getattr(likelihood, "support", ""))
    if support.startswith(("[0, 1]", "8-bit")):
        return True
    return getattr(likelihood, "link", "sigmoid") == "sigmoid"


def _checked_entry(method: Callable[..., Any], where: str) -> Callable[..., Any]:
    """Wrap an image entry point (``encode``, ``reconstruct``, ...) with :func:`entry_images`.

    Only the outermost call checks (``reconstruct`` calling ``encode`` checks once).
    """

    @functools.wraps(method)
    def checked(self: nn.Module, images: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(_ENTRY, "depth", 0):
            return method(self, images, *args, **kwargs)
        images = entry_images(self, images, where=where)
        _ENTRY.depth = 1
        try:
            return method(self, images, *args, **kwargs)
        finally:
            _ENTRY.depth = 0

    checked._pssl_checked = True  # type: ignore[attr-defined]
    return checked


ENTRY_POINTS = ("encode", "reconstruct", "cluster")
"""Methods of :class:`SSLModel` that take ``(B, C, H, W)`` images from users; every subclass's
definitions of them are wrapped with :func:`entry_images` (the checks training applies)."""


class SSLModel(nn.Module):
    """Base class of every method.

    Subclasses write their Pyro programs over a :class:`ViewBatch` in
    :meth:`model_program` and :meth:`guide_program`; :meth:`model` and :meth:`guide`
    are the tensor-argument entry points that Pyro (``SVI``, ``Predictive``,
    ``JitTrace_ELBO``) and the training loop call.

    Attributes:
        generative: whether the method models x (has a decoder and likelihood).
        min_views: the fewest views per item the method can use.
        needs_paired_data: the method reads two modalities from each image (its top and
            bottom halves); training refuses data that is not paired (``paired-*``).
        num_views: J used when the model samples views without being given any
            (set from the spec by :func:`build_model`).
        representation_dim: size of :meth:`encode`'s output.
        guide_networks: names of the sub-modules that belong to the guide (the
            inference networks); the guide registers their parameters with Pyro,
            the model registers every other trainable parameter.
        pyro_name: the prefix of this method's names in Pyro's param store.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for where in ENTRY_POINTS:
            method = cls.__dict__.get(where)
            if callable(method) and not getattr(method, "_pssl_checked", False):
                setattr(cls, where, _checked_entry(method, where))

    generative: bool = False
    min_views: int = 1
    needs_paired_data: bool = False
    num_views: int = 2
    representation_dim: int
    guide_networks: tuple[str, ...] = ()
    pyro_name: str = "pssl"

    # --- the Pyro programs: tensors in -------------------------------------------------

    def model(
        self,
        views: torch.Tensor | ViewBatch | None = None,
        index: torch.Tensor | None = None,
        num_items: int | None = None,
        *,
        num_views: int | None = None,
        observe: bool = True,
        extras: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """The generative program p(x, z, ...) (see :func:`make_view_batch` for the arguments).

        Args:
            views: ``(B, J, C, H, W)`` observed views, or ``None`` to sample them.
            index: ``(B,)`` item positions in the data set (the items plate's subsample).
            num_items: N, the data-set size (the items plate's size).
            num_views: J when ``views`` is ``None``.
            observe: ``False`` samples x even though ``views`` are given (posterior
                predictive with ``Predictive(model, guide=guide)``).
            extras: per-batch tensors a method may need.
        """
        batch = make_view_batch(
            views,
            index,
            num_items,
            num_views=num_views,
            observe=observe,
            extras=extras,
            default_num_views=self.num_views,
        )
        if _Registration.enabled:
            register_parameters(self.pyro_name, self.pyro_parameters("model"))
        self.model_program(batch)

    def guide(
        self,
        views: torch.Tensor | ViewBatch | None = None,
        index: torch.Tensor | None = None,
        num_items: int | None = None,
        *,
        num_views: int | None = None,
        observe: bool = True,
        extras: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """The guide q(z, ... | x) over the same arguments as :meth:`model` (``views`` required).

        ``num_views`` and ``observe`` are accepted (and ignored) so that model and
        guide share one signature, as ``SVI`` and ``Predictive`` call both alike.
        """
        batch = make_view_batch(views, index, num_items, extras=extras, default_num_views=self.num_views)
        if batch.views is None:
            raise ValueError(f"{type(self).__name__}.guide needs views: q(z | x) conditions on the images")
        if _Registration.enabled:
            register_parameters(self.pyro_name, self.pyro_parameters("guide"))
        self.guide_program(batch)

    def model_program(self, batch: ViewBatch) -> None:
        """The model over one :class:`ViewBatch` (``batch.views`` is ``None`` when x is sampled)."""
        raise NotImplementedError

    def guide_program(self, batch: ViewBatch) -> None:
        """The guide over one :class:`ViewBatch` (with views)."""
        raise NotImplementedError

    def pyro_parameters(self, side: str) -> list[tuple[str, nn.Parameter]]:
        """The trainable parameters the ``model`` or the ``guide`` registers with Pyro.

        Args:
            side: ``"model"`` or ``"guide"``; the guide's are those of
                :attr:`guide_networks`, the model's all others.
        """
        if side not in ("model", "guide"):
            raise ValueError(f"side must be 'model' or 'guide', got {side!r}")
        in_guide = side == "guide"
        roots = self.guide_networks
        return [
            (name, parameter)
            for name, parameter in self.named_parameters()
            if parameter.requires_grad and (name.split(".", 1)[0] in roots) == in_guide
        ]

    # --- the rest of the interface -----------------------------------------------------

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, representation_dim)`` frozen representation."""
        raise NotImplementedError

    def check_data(self, images: torch.Tensor, *, name: str = "data") -> None:
        """Raise ``ValueError`` if the method cannot model ``images``."""

    def after_step(self) -> None:
        """Call after every optimiser step (the training loop does; so should a plain ``svi.step`` loop).

        Methods with state outside the gradient (MoCo's key networks and queue,
        CLIP's clamped logit scale) update it here; for the others it does nothing.
        """

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Image-space mean of p(x | z = encoder mean); generative methods only."""
        raise NotImplementedError(f"{type(self).__name__} does not model images")

    def sample_images(self, num_samples: int) -> torch.Tensor:
        """Decoded prior samples ``(num_samples, C, H, W)``; generative methods only."""
        raise NotImplementedError(f"{type(self).__name__} does not model images")

    num_clusters: int | None = None
    """K when the method's own model clusters items (a prior with a discrete component), else ``None``."""

    def cluster(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B,)`` int64 ids in ``[0, num_clusters)`` (methods with ``num_clusters``)."""
        raise NotImplementedError(f"{type(self).__name__} does not cluster its items")

    def describe(self) -> dict[str, Any]:
        """Resolved choices worth recording in the run config (e.g. the y-guide)."""
        return {}


def check_num_views(model_name: str, num_views: int, minimum: int) -> None:
    """Raise a clear error when a method is given too few views."""
    if num_views < minimum:
        raise ValueError(
            f"model {model_name!r} needs num_views >= {minimum} (views of one item are what it groups), "
            f"got num_views={num_views}"
        )


def build_model(name: str, spec: ModelSpec, options: dict | None = None) -> SSLModel:
    """Build a registered method from its name, the framework spec and user options.

    The method's Pyro param-store prefix is its registered name, and its default
    number of views (for sampling without data) the spec's.
    """
    method = MODELS.build(name, options, spec=spec)
    method.pyro_name = name
    method.num_views = spec.num_views
    return method
