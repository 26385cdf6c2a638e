"""``pssl claims``: the paper's claims as one reproducible experiment with computed verdicts.

Modules, one idea each:

* :mod:`pssl.claims.budgets`: the budgets (``smoke``, ``cpu``, ``paper``) and the shared grid;
* :mod:`pssl.claims.comparisons`: each claim as comparisons (method, comparator, data, measure);
* :mod:`pssl.claims.verdicts`: paired differences over seeds, 95% intervals and the verdict rule (pure);
* :mod:`pssl.claims.measures`: reading the measures (and plateaus) from runs, with a cache;
* :mod:`pssl.claims.run`: the grid through :func:`pssl.compare.run_pair`, selection, the table;
* :mod:`pssl.claims.report`: the markdown/CSV/JSON table and the figures.
"""

from __future__ import annotations

from pssl.claims.budgets import BUDGETS, get_budget
from pssl.claims.verdicts import RULE, paired_difference, verdict

__all__ = ["BUDGETS", "RULE", "get_budget", "paired_difference", "run_claims", "verdict"]


def run_claims(tokens: list[str]) -> dict:
    """See :func:`pssl.claims.run.run_claims`."""
    from pssl.claims.run import run_claims as _run

    return _run(tokens)
