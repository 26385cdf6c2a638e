"""Verdicts from numbers: paired differences over seeds, their 95% interval, and the rule.

Every comparison of a claim is two methods measured on the same data with the
same seeds (seed ``s`` of both runs shares its data split, augmentation stream
and initialisation seed). For each seed present in both,

    d_s = sign * (method_s - comparator_s)

where ``sign`` is +1 when a higher measure supports the claim (accuracy, R^2)
and -1 when a lower one does (a variance ratio). With ``n`` paired seeds, mean
``dbar`` and sample standard deviation ``s_d``, the 95% Student-t interval is

    dbar +- t_{0.975, n-1} * s_d / sqrt(n).

The verdict rule, applied to that interval and nothing else:

* ``holds``: the whole interval is above 0 (lower end > 0);
* ``does not hold``: the whole interval is below 0 (upper end < 0): the
  comparator is better beyond the seed-to-seed spread;
* ``inconclusive``: the interval contains 0, or fewer than two paired seeds
  (no interval), or a value is missing or not finite.

These functions are pure: the same numbers always give the same verdict, and a
verdict is never written by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
INCONCLUSIVE = "inconclusive"
NOT_RUN = "not run at this budget"
VERDICTS = (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, NOT_RUN)

RULE = (
    "paired difference d_s = sign * (method_s - comparator_s) per seed s (sign +1 where higher supports "
    "the claim, -1 where lower does); 95% Student-t interval dbar +- t_{0.975,n-1} s_d / sqrt(n); "
    "holds if the interval lies above 0, does not hold if it lies below 0, inconclusive otherwise "
    "(including fewer than 2 paired seeds)"
)
"""The verdict rule in one sentence, as the report states it."""


@dataclass(frozen=True)
class PairedDifference:
    """The paired differences of one comparison and their 95% interval.

    Attributes:
        differences: ``d_s`` per seed, in seed order.
        mean: ``dbar`` (NaN when there is no paired seed).
        half_width: ``t_{0.975, n-1} * s_d / sqrt(n)`` (NaN for fewer than 2 seeds).
        n: number of paired seeds.
    """

    differences: tuple[float, ...]
    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def t_quantile_975(dof: int) -> float:
    """The 0.975 quantile of Student's t with ``dof`` degrees of freedom (scipy)."""
    from scipy.stats import t

    if dof < 1:
        raise ValueError(f"Student-t needs at least 1 degree of freedom, got {dof}")
    return float(t.ppf(0.975, dof))


def mean_interval(values: list[float] | tuple[float, ...]) -> tuple[float, float, int]:
    """``(mean, half-width of the 95% Student-t interval, n)``; half-width NaN for n < 2."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t_quantile_975(n - 1) * sd / math.sqrt(n), n


def paired_difference(
    method: Mapping[int, float], comparator: Mapping[int, float], *, sign: int = 1
) -> PairedDifference:
    """Paired differences over the seeds present (and finite) in both mappings.

    Args:
        method: seed -> the measure of the method the claim is about.
        comparator: seed -> the comparator's measure on the same seed.
        sign: +1 if a higher measure supports the claim, -1 if a lower one does.

    Raises:
        ValueError: for a sign other than +1 or -1.
    """
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign!r}")
    seeds = sorted(s for s in method if s in comparator)
    differences = tuple(
        sign * (float(method[s]) - float(comparator[s]))
        for s in seeds
        if _finite(method[s]) and _finite(comparator[s])
    )
    mean, half, n = mean_interval(differences)
    return PairedDifference(differences, mean, half, n)


def verdict(difference: PairedDifference) -> str:
    """``holds``, ``does not hold`` or ``inconclusive`` by the rule in :data:`RULE`."""
    if difference.n < 2 or not (_finite(difference.mean) and _finite(difference.half_width)):
        return INCONCLUSIVE
    if difference.low > 0:
        return HOLDS
    if difference.high < 0:
        return DOES_NOT_HOLD
    return INCONCLUSIVE


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


__all__ = [
    "DOES_NOT_HOLD",
    "HOLDS",
    "INCONCLUSIVE",
    "NOT_RUN",
    "RULE",
    "VERDICTS",
    "PairedDifference",
    "mean_interval",
    "paired_difference",
    "t_quantile_975",
    "verdict",
]
