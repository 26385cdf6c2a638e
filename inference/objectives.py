r"""Objectives: any Pyro ELBO over a method's model/guide pair, with named terms.

An objective is a Pyro ELBO (``Trace_ELBO``, ``TraceGraph_ELBO``, ``RenyiELBO``,
``TraceMeanField_ELBO``, ``TraceEnum_ELBO``, or one a user builds), chosen by name
from :data:`OBJECTIVES` (``objective=iwae objective.num_particles=16``) or passed
as an instance. :class:`Objective` wraps it as a ``torch.nn.Module`` over
:class:`~pssl.models.base.ViewBatch` minibatches.

Scaling. For a minibatch of ``B`` items out of ``N`` the items plate scales
every log-density by ``N / B``. The objective runs the ELBO on the model and
guide under ``poutine.scale(B / N)``, so every site counts once per minibatch
item and the loss is minus the *minibatch sum* of per-item bounds (as the
reference implementation sums over the batch). Pyro's own loss on the same
batch (``Trace_ELBO().loss(model, guide, views, index, num_items=N)``) is the
whole-data-set estimate: **trainer loss = Pyro loss x B / N** for the ELBOs
linear in the log-densities (trace, tracegraph, tracemeanfield, traceenum).
For ``renyi``/``iwae`` the scaling is applied before the log-mean-exp, so each
item's weight is its own unscaled ``log p(x_i, z_i) - log q(z_i | x_i)``: the
bound is per item, which an importance-weighted bound needs (Pyro's RenyiELBO
keeps the items plate, common to every site, out of its sum over sites).

Named terms, in **nats per item** (averaged over particles), read from the very
traces the ELBO evaluated (no second evaluation):

* ``reconstruction``: the observation site ``x`` (log p(x | z), with its tempering scale);
* ``prior``: every latent site in the model (log p(y) + log p(z | y), or log p(z));
  with enumeration, the enumerated sites' exact marginal is included here;
* ``entropy``: minus every latent site in the guide (-log q; zero for point masses);
* one term per other observed site or ``pyro.factor`` (the discriminative methods'
  log-factors, e.g. ``infonce``, ``invariance``), under its own site name;
* ``elbo``: the single-sample ELBO, the sum of the terms above (for
  ``tracemeanfield``, Pyro's estimate with analytic KL terms, which the sampled
  terms above estimate without);
* ``objective``: for ``renyi``/``iwae`` only, the value the chosen estimator
  bounds (the importance-weighted bound for ``alpha = 0``).

Diagnostics: a ``pyro.deterministic`` site in the model (e.g. SimCLR's
``alignment`` and ``uniformity``) is not part of the ELBO or the loss; its
value (averaged, detached) is reported in ``terms`` under its site name, in
its own units rather than nats.

Validity. :meth:`Objective.prepare` traces the model and guide once before
training and refuses pairs that would silently optimise something else, with
one line naming the reason: enumeration with an ELBO that cannot enumerate (or
``traceenum`` with nothing to enumerate), ``tracemeanfield`` with a guide that
is not mean-field (SimVAE's q(y | z) depends on z), several particles or a
Rényi bound with a point-mass guide (every particle is the same), a Rényi
bound with a non-reparameterised guide site. It also returns the parameters
created with ``pyro.param``/``PyroParam`` inside the model or guide, which the
training loop trains and checkpoints with the networks.

Validation: Pyro's and torch's argument and support checks (``pyro.enable_validation``,
distributions' ``validate_args``) cost a few elementwise passes and Python calls per
site on every evaluation. With ``validate="first"`` (the default) they run, as the
global settings say, on the first evaluation of each *batch signature* (views shape,
dtype and device, ``extras`` shapes, train/eval mode, autocast), where a wrong shape,
an invalid parameter or a value outside a distribution's support shows up, and are
switched off for later evaluations of a signature already checked. A value that
goes bad later (NaN, an infinite log-density) still surfaces: the loss or a named
site goes non-finite, which the training loop reports (and can skip). The data are
checked against the likelihood's support once, before training
(:meth:`~pssl.models.base.SSLModel.check_data`). ``validate="always"`` keeps the
global settings on every evaluation; ``validate="never"`` switches the checks off
throughout.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyro
import pyro.distributions
import pyro.infer
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
from torch import nn

from pssl.models import sites
from pssl.models.base import SSLModel, ViewBatch, registration_suspended
from pssl.registry import Registry


class NonFiniteError(FloatingPointError):
    """A loss term or gradient went NaN or infinite; the message names the site or term."""


@dataclass
class ObjectiveOutput:
    """Result of one objective evaluation.

    Attributes:
        loss: scalar to minimise (the minibatch sum of per-item negative ELBO).
        terms: named terms in nats per item (detached scalars), including ``elbo``, plus
            the model's ``pyro.deterministic`` diagnostics in their own units.
        site_log_prob: per-site scaled log-density sums (model sites as ``model/<name>``,
            guide sites as ``guide/<name>``), not detached; used to name the culprit
            when something goes non-finite.
        backward_done: the ELBO has no differentiable loss (``TraceGraph_ELBO``,
            ``RenyiELBO``) and already wrote the gradients of ``loss`` into ``.grad``
            (``loss`` is then detached).
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    site_log_prob: dict[str, torch.Tensor]
    backward_done: bool = False

    def nonfinite_sites(self) -> list[str]:
        return [name for name, value in self.site_log_prob.items() if not torch.isfinite(value).all()]


def term_of_site(name: str, site: dict, *, in_guide: bool) -> str:
    """The named term a trace site contributes to (see module docstring)."""
    if in_guide:
        return "entropy"
    if site["is_observed"]:
        return "reconstruction" if name == sites.OBSERVATION else name
    return "prior"


VALIDATE_MODES = ("first", "always", "never")
"""When :class:`ELBO` runs Pyro's and torch's validation checks (see the module docstring)."""


@contextmanager
def validation_disabled() -> Iterator[None]:
    """Switch Pyro's (infer, poutine, distributions) and torch's distribution checks off, then restore each.

    Unlike ``pyro.validation_enabled(False)``, torch's own default
    (``Distribution.set_default_validate_args``) is restored to what it was, not to
    Pyro's flag.
    """
    torch_default = torch.distributions.Distribution._validate_args
    saved = (
        pyro.infer.is_validation_enabled(),
        poutine.is_validation_enabled(),
        pyro.distributions.is_validation_enabled(),
    )
    pyro.infer.enable_validation(False)
    poutine.enable_validation(False)
    pyro.distributions.enable_validation(False)  # also sets torch's default validate_args
    try:
        yield
    finally:
        pyro.infer.enable_validation(saved[0])
        poutine.enable_validation(saved[1])
        pyro.distributions.enable_validation(saved[2])
        torch.distributions.Distribution.set_default_validate_args(torch_default)


def site_log_prob_sum(trace: Trace, name: str, site: dict) -> torch.Tensor:
    """``sum(scale * mask * log p(value))`` of one sample site: Pyro's ``log_prob_sum``, computed alone.

    The same arithmetic as ``Trace.compute_log_prob`` (``scale_and_mask`` then a sum),
    without storing the per-element ``log_prob`` in the trace; a ``ValueError`` is
    re-raised with the trace's shapes, worded as Pyro words it.
    """
    try:
        log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    except ValueError as err:
        shapes = trace.format_shapes(last_site=name)
        raise ValueError(f"Error while computing log_prob at site '{name}':\n{err}\n{shapes}").with_traceback(
            err.__traceback__
        ) from err
    return scale_and_mask(log_p, site["scale"], site["mask"]).sum()


@contextmanager
def method_errors() -> Iterator[None]:
    """Re-raise a method's own ``ValueError``/``TypeError`` as it raised it, without Pyro's shape table.

    Pyro re-raises an error from inside a model or guide with the trace's shape
    table appended; the error the method raised (e.g. "needs at least 2 items per
    batch") is re-raised instead, chained to Pyro's for debugging.
    """
    try:
        yield
    except (ValueError, TypeError) as err:
        cause = err.__cause__
        if type(cause) is type(err) and str(err).startswith(str(cause)):
            try:
                plain = type(cause)(*cause.args)
            except Exception:  # an exception class with another constructor: keep Pyro's
                raise err from cause
            raise plain.with_traceback(cause.__traceback__) from err
        raise


def _autocast_state(device_type: str) -> tuple[bool, torch.dtype | None]:
    """Whether autocast is on for ``device_type``, and to which dtype (``(False, None)`` if unknown)."""
    try:
        if torch.is_autocast_enabled(device_type):
            return True, torch.get_autocast_dtype(device_type)
    except (TypeError, RuntimeError, AttributeError):  # older torch, or a device type autocast lacks
        pass
    return False, None


# --------------------------------------------------------------------------- the registry

OBJECTIVES: Registry[pyro.infer.ELBO] = Registry("objective")
"""Pyro ELBOs by name; options ``num_particles``, ``vectorize_particles``, ``alpha`` (renyi), ..."""


def _check_particles(num_particles: int, max_plate_nesting: int) -> None:
    if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"objective.num_particles must be a positive integer, got {num_particles!r}")
    if isinstance(max_plate_nesting, bool) or not isinstance(max_plate_nesting, int) or max_plate_nesting < 0:
        raise ValueError(
            f"objective.max_plate_nesting must be a non-negative integer, got {max_plate_nesting!r}"
        )


@OBJECTIVES.register(
    "trace", help="Trace_ELBO: the ELBO, reparameterised or score-function gradients (default)"
)
def build_trace(
    *,
    num_particles: int = 1,
    vectorize_particles: bool = False,
    max_plate_nesting: int = sites.MAX_PLATE_NESTING,
) -> pyro.infer.Trace_ELBO:
    _check_particles(num_particles, max_plate_nesting)
    return pyro.infer.Trace_ELBO(
        num_particles=num_particles,
        vectorize_particles=vectorize_particles,
        max_plate_nesting=max_plate_nesting,
    )


@OBJECTIVES.register(
    "tracegraph",
    help="TraceGraph_ELBO: the ELBO, Rao-Blackwellised score-function gradients for discrete sites",
)
def build_tracegraph(
    *,
    num_particles: int = 1,
    vectorize_particles: bool = False,
    max_plate_nesting: int = sites.MAX_PLATE_NESTING,
) -> pyro.infer.TraceGraph_ELBO:
    _check_particles(num_particles, max_plate_nesting)
    return pyro.infer.TraceGraph_ELBO(
        num_particles=num_particles,
        vectorize_particles=vectorize_particles,
        max_plate_nesting=max_plate_nesting,
    )


@OBJECTIVES.register(
    "renyi",
    help="RenyiELBO: Renyi alpha-divergence bound per item, K particles (alpha=0: IWAE, alpha->1: ELBO)",
)
def build_renyi(
    *,
    alpha: float = 0.0,
    num_particles: int = 8,
    vectorize_particles: bool = False,
    max_plate_nesting: int = sites.MAX_PLATE_NESTING,
) -> pyro.infer.RenyiELBO:
    _check_particles(num_particles, max_plate_nesting)
    if not math.isfinite(alpha) or alpha == 1:
        raise ValueError(
            f"objective.alpha must be finite and not 1 (alpha = 1 is objective=trace), got {alpha!r}"
        )
    return pyro.infer.RenyiELBO(
        alpha=alpha,
        num_particles=num_particles,
        vectorize_particles=vectorize_particles,
        max_plate_nesting=max_plate_nesting,
    )


@OBJECTIVES.register("iwae", help="importance-weighted bound per item with K particles (RenyiELBO, alpha=0)")
def build_iwae(
    *,
    num_particles: int = 8,
    vectorize_particles: bool = False,
    max_plate_nesting: int = sites.MAX_PLATE_NESTING,
) -> pyro.infer.RenyiELBO:
    return build_renyi(
        alpha=0.0,
        num_particles=num_particles,
        vectorize_particles=vectorize_particles,
        max_plate_nesting=max_plate_nesting,
    )


@OBJECTIVES.register(
    "tracemeanfield", help="TraceMeanField_ELBO: the ELBO with analytic KL terms; needs a mean-field guide"
)
def build_tracemeanfield(
    *,
    num_particles: int = 1,
    vectorize_particles: bool = False,
    max_plate_nesting: int = sites.MAX_PLATE_NESTING,
) -> pyro.infer.TraceMeanField_ELBO:
    _check_particles(num_particles, max_plate_nesting)
    return pyro.infer.TraceMeanField_ELBO(
        num_particles=num_particles,
        vectorize_particles=vectorize_particles,
        max_plate_nesting=max_plate_nesting,
    )


@OBJECTIVES.register(
    "traceenum", help="TraceEnum_ELBO: the ELBO with discrete sites marked for enumeration summed out exactly"
)
def build_traceenum(
    *,
    num_particles: int = 1,
    vectorize_particles: bool = False,
    max_plate_nesting: int = sites.MAX_PLATE_NESTING,
) -> pyro.infer.TraceEnum_ELBO:
    _check_particles(num_particles, max_plate_nesting)
    return pyro.infer.TraceEnum_ELBO(
        num_particles=num_particles,
        vectorize_particles=vectorize_particles,
        max_plate_nesting=max_plate_nesting,
    )


def build_objective(name: str, options: dict[str, Any] | None = None) -> pyro.infer.ELBO:
    """The Pyro ELBO registered as ``name`` with user ``options``."""
    return OBJECTIVES.build(name, options)


# --------------------------------------------------------------------------- validity


class ObjectiveError(ValueError):
    """An objective that cannot train this model/guide pair (one line: the reason and a way out)."""


def objective_label(elbo: pyro.infer.ELBO) -> str:
    """A short name for messages: ``RenyiELBO(alpha=0, num_particles=8)``."""
    parts = [f"num_particles={elbo.num_particles}"]
    if isinstance(elbo, pyro.infer.RenyiELBO):
        parts.insert(0, f"alpha={elbo.alpha:g}")
    return f"{type(elbo).__name__}({', '.join(parts)})"


def _is_renyi(elbo: pyro.infer.ELBO) -> bool:
    return isinstance(elbo, pyro.infer.RenyiELBO)


def _enumerates(elbo: pyro.infer.ELBO) -> bool:
    return isinstance(elbo, pyro.infer.TraceEnum_ELBO)


def _is_mean_field(elbo: pyro.infer.ELBO) -> bool:
    return isinstance(elbo, pyro.infer.TraceMeanField_ELBO)


@dataclass
class ProbeResult:
    """What one traced run of the model and guide shows (see :func:`probe`).

    Attributes:
        params: parameters met as ``param`` sites, ``{name: unconstrained tensor}`` in order.
        enumerated: sites marked ``infer={"enumerate": ...}`` (model or guide).
        guide_latents: the guide's latent sample sites.
        point_masses: those of them that are point masses (``Delta``).
        non_reparameterised: guide latents without ``rsample`` (and not enumerated).
        guide_dependencies: for each guide latent, the other guide latents it depends on
            (filled only when asked for, as for ``tracemeanfield``).
    """

    params: dict[str, torch.Tensor] = field(default_factory=dict)
    enumerated: list[str] = field(default_factory=list)
    guide_latents: list[str] = field(default_factory=list)
    point_masses: list[str] = field(default_factory=list)
    non_reparameterised: list[str] = field(default_factory=list)
    guide_dependencies: dict[str, set[str]] = field(default_factory=dict)


def _innermost(fn: Any) -> Any:
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def probe(
    model: Callable[..., Any], guide: Callable[..., Any], batch: ViewBatch, *, dependencies: bool = False
) -> ProbeResult:
    """Trace ``guide`` and ``model`` (replayed) once on ``batch`` and report their structure.

    The global RNG is forked (training noise is unchanged); the caller decides the
    train/eval mode of the networks.
    """
    result = ProbeResult()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(batch)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(batch)
        for trace in (guide_trace, model_trace):
            for name, site in trace.nodes.items():
                if site["type"] == "param":
                    value = site["value"]
                    unconstrained = value.unconstrained() if hasattr(value, "unconstrained") else value
                    result.params.setdefault(name, unconstrained)
                elif site["type"] == "sample" and not site_is_subsample(site):
                    if site["infer"].get("enumerate") and name not in result.enumerated:
                        result.enumerated.append(name)
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site) or site["is_observed"]:
                continue
            result.guide_latents.append(name)
            if isinstance(_innermost(site["fn"]), pyro.distributions.Delta):
                result.point_masses.append(name)
            elif not site["fn"].has_rsample and not site["infer"].get("enumerate"):
                result.non_reparameterised.append(name)
        if dependencies and result.guide_latents:
            from pyro.infer.inspect import get_dependencies

            found = get_dependencies(guide, (batch,))["prior_dependencies"]
            result.guide_dependencies = {
                name: {other for other in upstream if other != name and other in result.guide_latents}
                for name, upstream in found.items()
                if name in result.guide_latents
            }
            # a point mass is a deterministic function of what it is computed from, which
            # the provenance tracking above does not follow: test it by perturbation
            for name in result.point_masses:
                upstream = _delta_dependencies(model_trace, guide, batch, name, result.guide_latents)
                result.guide_dependencies.setdefault(name, set()).update(upstream)
    return result


def _delta_dependencies(
    model_trace: Trace, guide: Callable[..., Any], batch: ViewBatch, name: str, latents: list[str]
) -> set[str]:
    """The guide latents drawn before the point mass ``name`` whose value moves it (by perturbation)."""
    base = poutine.trace(guide).get_trace(batch)
    order = list(base.nodes)
    found = set()
    for other in latents:
        if other == name or order.index(other) > order.index(name):
            continue
        value = base.nodes[other]["value"]
        if not value.is_floating_point():
            continue
        moved = poutine.trace(poutine.condition(guide, data={other: value + 1.0})).get_trace(batch)
        if not torch.equal(moved.nodes[name]["value"], base.nodes[name]["value"]):
            found.add(other)
    return found


def check_objective(elbo: pyro.infer.ELBO, structure: ProbeResult, *, method_name: str) -> None:
    """Refuse ``elbo`` for a model/guide pair it would not train as intended.

    Raises:
        ObjectiveError: one line naming the objective, the reason and the alternative.
    """
    label = objective_label(elbo)
    if structure.enumerated and not _enumerates(elbo):
        raise ObjectiveError(
            f"{label} cannot enumerate site(s) {', '.join(map(repr, structure.enumerated))} of {method_name} "
            "(marked infer={'enumerate': 'parallel'}); use objective=traceenum"
        )
    if _enumerates(elbo) and not structure.enumerated:
        raise ObjectiveError(
            f"{label}: {method_name} has no discrete site marked for enumeration, so there is nothing to "
            "enumerate; use objective=trace (the same estimate, without the enumeration machinery)"
        )
    stochastic = [s for s in structure.guide_latents if s not in structure.point_masses]
    if not stochastic and (elbo.num_particles > 1 or _is_renyi(elbo)):
        raise ObjectiveError(
            f"{label}: the guide of {method_name} is a point mass (no stochastic latent), so every particle "
            "is the same and a Renyi/importance-weighted bound adds nothing; use objective=trace "
            "with num_particles=1"
        )
    if _is_renyi(elbo) and structure.non_reparameterised:
        raise ObjectiveError(
            f"{label} needs reparameterised guide sites; "
            f"{', '.join(map(repr, structure.non_reparameterised))} of {method_name} is not; "
            "use objective=trace or tracegraph (score-function gradients)"
        )
    if _is_renyi(elbo) and not structure.params:
        raise ObjectiveError(
            f"{label} differentiates only parameters registered with Pyro (pyro.module, pyro.param, "
            f"PyroModule), and the model and guide of {method_name} register none; register the networks "
            "(SSLModel.model/guide do) or use objective=trace"
        )
    if _is_mean_field(elbo):
        coupled = {k: v for k, v in structure.guide_dependencies.items() if v}
        if coupled:
            site, upstream = next(iter(coupled.items()))
            raise ObjectiveError(
                f"{label} needs a mean-field guide, but the guide of {method_name} draws {site!r} given "
                f"{', '.join(sorted(map(repr, upstream)))} (for SimVAE: q(y | z) depends on z), so it would "
                "optimise a different objective; use objective=trace"
            )


# --------------------------------------------------------------------------- the objective


def _record_traces(elbo: pyro.infer.ELBO, sink: list[tuple[Trace, Trace]]) -> None:
    """Make ``elbo`` append every (model, guide) trace pair it evaluates to ``sink``.

    Every Pyro ELBO draws its particles through ``_get_traces``; wrapping it on the
    instance lets the named terms be read from the log-densities the ELBO itself
    computed, with no second evaluation.

    ``_get_traces`` is private Pyro API: Pyro has no public hook that exposes the
    particle traces an ELBO evaluates (``pyro.poutine.trace`` around the model and
    guide would record a second, independent draw, not the one the loss used).
    """
    produce = elbo._get_traces

    def recorded(model: Any, guide: Any, args: Any, kwargs: Any) -> Iterator[tuple[Trace, Trace]]:
        for model_trace, guide_trace in produce(model, guide, args, kwargs):
            sink.append((model_trace, guide_trace))
            yield model_trace, guide_trace

    elbo._get_traces = recorded


class Objective(nn.Module):
    """A Pyro ELBO over ``method.model`` / ``method.guide`` (or a user's guide), with named terms.

    Args:
        method: any :class:`~pssl.models.base.SSLModel` (its ``model`` is the model).
        elbo: a Pyro ELBO instance (default ``Trace_ELBO()``); the objective uses a
            shallow copy of it.
        guide: a guide to use instead of ``method.guide`` (same arguments as the model).
        validate: ``first`` (default), ``always`` or ``never``: when Pyro's and torch's
            validation checks run (see the module docstring).

    Shapes:
        ``forward(batch)`` with ``batch.views`` ``(B, J, C, H, W)`` returns an
        :class:`ObjectiveOutput` whose ``loss`` is a scalar: minus the minibatch sum of
        the per-item bound.

    Raises:
        ValueError: for an unknown ``validate``.
        TypeError: for an ``elbo`` that is not a Pyro ELBO.
    """

    def __init__(
        self,
        method: SSLModel,
        elbo: pyro.infer.ELBO | None = None,
        *,
        guide: Callable[..., Any] | None = None,
        validate: str = "first",
    ) -> None:
        super().__init__()
        if validate not in VALIDATE_MODES:
            raise ValueError(f"unknown validate {validate!r}; accepted: {', '.join(VALIDATE_MODES)}")
        if elbo is None:
            elbo = build_trace()
        if not isinstance(elbo, pyro.infer.ELBO):
            raise TypeError(
                f"objective must be a pyro.infer ELBO instance or a registered name, got {elbo!r}"
            )
        if type(elbo).__name__.startswith("Jit"):
            raise ObjectiveError(
                f"{type(elbo).__name__} compiles the ELBO for fixed tensor arguments, for plain "
                "pyro.infer.SVI on model(views, index, num_items=N); the training loop takes the "
                f"non-compiled ELBO ({type(elbo).__name__[3:]})"
            )
        self.method = method
        self.custom_guide = guide
        self.elbo = copy.copy(elbo)
        self.label = objective_label(elbo)
        self.validate = validate
        self._validated: set[Hashable] = set()
        self._traces: list[tuple[Trace, Trace]] = []
        _record_traces(self.elbo, self._traces)
        self._differentiable = hasattr(type(self.elbo), "differentiable_loss")
        self._scaled: dict[tuple[float, Any, Any], tuple[Callable[..., Any], Callable[..., Any]]] = {}

    @property
    def guide(self) -> Callable[..., Any]:
        """The guide trained: the one passed in, else the method's (looked up at every call)."""
        return self.custom_guide if self.custom_guide is not None else self.method.guide

    def prepare(self, batch: ViewBatch) -> dict[str, torch.Tensor]:
        """Check the pair once on ``batch`` (raise :class:`ObjectiveError` if invalid).

        Runs in eval mode (no batch-norm statistics or queues change) with the RNG forked.
        Parameters the model or guide create with ``pyro.param`` are (re)initialised here
        from their initial values, so a run does not depend on what an earlier run in the
        same process left in Pyro's global param store.

        Returns:
            ``{name: unconstrained tensor}`` of the ``pyro.param``/``PyroParam`` parameters
            that the model or guide use besides the method's own ``nn.Parameter`` objects.
        """
        mode = self.method.training
        self.method.eval()
        try:
            with method_errors():
                store = pyro.get_param_store()
                with store.scope():  # an empty store: find the parameters without adopting stale values
                    found = probe(
                        self.method.model, self.guide, batch, dependencies=_is_mean_field(self.elbo)
                    )
                own = {id(p) for p in self.method.parameters()}
                # A run starts its param-store parameters from their initial values (as after
                # pyro.clear_param_store()), not from what an earlier run in this process left.
                for name, value in found.params.items():
                    if id(value) not in own and name in store:
                        del store[name]
                structure = probe(self.method.model, self.guide, batch)
                structure.guide_dependencies = found.guide_dependencies
        finally:
            self.method.train(mode)
        check_objective(
            self.elbo, structure, method_name=getattr(self.method, "pyro_name", type(self.method).__name__)
        )
        return {name: value for name, value in structure.params.items() if id(value) not in own}

    def signature(self, batch: ViewBatch) -> Hashable:
        """What makes two evaluations alike for validation: shapes, dtype, device, mode, autocast."""
        views = batch.views
        return (
            tuple(views.shape),
            views.dtype,
            views.device,
            tuple(sorted((k, tuple(v.shape), v.dtype) for k, v in batch.extras.items())),
            self.method.training,
            _autocast_state(views.device.type),
        )

    def forward(self, batch: ViewBatch) -> ObjectiveOutput:
        if self.validate == "always":
            return self._evaluate(batch)
        if self.validate == "first":
            key = self.signature(batch)
            if key not in self._validated:
                output = self._evaluate(batch)
                self._validated.add(key)
                return output
        with validation_disabled():
            return self._evaluate(batch)

    def _programs(self, factor: float) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """Model and guide under ``poutine.scale(factor)``, kept while batch size and programs stay."""
        model, guide = self.method.model, self.guide
        key = (factor, model, guide)
        programs = self._scaled.get(key)
        if programs is None:
            programs = (poutine.scale(model, scale=factor), poutine.scale(guide, scale=factor))
            self._scaled = {key: programs}  # one batch size at a time (the last batch may differ)
        return programs

    def _evaluate(self, batch: ViewBatch) -> ObjectiveOutput:
        model, guide = self._programs(batch.batch_size / batch.num_items)
        self._traces.clear()
        backward_done = False
        try:
            # The optimiser holds the parameters (found by prepare): the per-call registration
            # with Pyro's param store is skipped, except for ELBOs that backpropagate themselves
            # (RenyiELBO only differentiates when the traces hold param sites).
            if not torch.is_grad_enabled():
                with registration_suspended():
                    loss = torch.as_tensor(self.elbo.loss(model, guide, batch), dtype=torch.float64)
            elif self._differentiable:
                with registration_suspended():
                    loss = self.elbo.differentiable_loss(model, guide, batch)
            else:
                loss = torch.as_tensor(self.elbo.loss_and_grads(model, guide, batch), dtype=torch.float64)
                backward_done = True
            terms, site_log_prob = self._terms(batch, loss)
        finally:
            self._traces.clear()
        return ObjectiveOutput(
            loss=loss, terms=terms, site_log_prob=site_log_prob, backward_done=backward_done
        )

    def _terms(
        self, batch: ViewBatch, loss: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Named terms (nats per item) and per-site sums from the recorded traces."""
        count = batch.batch_size
        particles = self.elbo.num_particles
        nesting = self.elbo.max_plate_nesting
        sums: dict[str, torch.Tensor] = {}
        site_log_prob: dict[str, torch.Tensor] = {}
        diagnostics: dict[str, torch.Tensor] = {}
        enumerated = False
        for index, (model_trace, guide_trace) in enumerate(self._traces):
            for trace, in_guide in ((model_trace, False), (guide_trace, True)):
                for name, site in trace.nodes.items():
                    if site["type"] != "sample" or site_is_subsample(site):
                        continue
                    if site["infer"].get("_deterministic"):  # a diagnostic, not a density
                        if not in_guide and index == 0:
                            diagnostics[name] = site["value"].detach().float().mean()
                        continue
                    if in_guide and site["is_observed"]:
                        continue
                    log_prob = site.get("log_prob")
                    if log_prob is not None and math.isfinite(nesting) and log_prob.dim() > nesting:
                        enumerated = True  # carries enumeration dimensions: summed out by the ELBO
                        continue
                    value = site.get("log_prob_sum")
                    if value is None:
                        value = site_log_prob_sum(trace, name, site)
                    if index == 0:
                        site_log_prob[("guide/" if in_guide else "model/") + name] = value
                    term = term_of_site(name, site, in_guide=in_guide)
                    contribution = (-value if in_guide else value).detach()
                    sums[term] = contribution if term not in sums else sums[term] + contribution
        terms = {name: value / (particles * count) for name, value in sums.items()}
        device = batch.views.device if batch.views is not None else batch.index.device
        total = sum(terms.values(), torch.zeros((), device=device))
        estimate = (-loss.detach() / count).to(total.dtype if total.is_floating_point() else torch.float32)
        if _is_renyi(self.elbo):
            terms["elbo"] = total
            terms["objective"] = estimate.to(device)
        else:
            if enumerated:  # the exact marginal of the enumerated sites: the rest of the ELBO
                terms["prior"] = terms.get("prior", 0.0) + (estimate.to(device) - total)
            terms["elbo"] = estimate.to(device)
        terms.update(diagnostics)
        return terms, site_log_prob


ELBO = Objective
"""The name this module's objective had when it was a single-particle Trace_ELBO."""
