"""The paper's claims as comparisons between two methods on one data set and one measure.

Each claim of the paper (PAPER.md section 4; issue 20) becomes one or more
:class:`Comparison` rows: the method the claim is about, a comparator, the data
set, the measure and the direction that supports the claim.

* C1 — SimVAE vs the plain VAE, content (linear probe test accuracy), on each
  content data set (MNIST, FashionMNIST).
* C2 — SimVAE vs each discriminative method, content, on the same data sets.
* C3 — SimVAE vs each discriminative method, style: the mean over the styled
  set's recorded factors of the linear style probe's test score (accuracy for
  discrete factors, R^2 for continuous ones), on the styled set.
* C4 — each discriminative method vs the plain VAE, latent structure: the
  within-item / across-item variance ratio of the representation over J
  augmented views of test images (:func:`pssl.diagnostics.structure.representation_structure`;
  lower = an item's views clustered). The VAE is trained on the same views but
  its prior has no term pulling views of one item together, so it is the
  comparator without that pressure. Lower supports the claim (``sign = -1``).
* C5 — each discriminative method's backbone features (before the projection
  head, what evaluation reads by default) vs its projection-head output, style
  measure as C3, on the styled set: the head is justified if features before it
  keep more style.
* C6 — SimVAE vs the VAE, content, on CIFAR-10 (paper budget only): SimVAE
  narrows the gap to every discriminative method by exactly this difference
  (gap_VAE - gap_SimVAE = SimVAE - VAE).
"""

from __future__ import annotations

from dataclasses import dataclass

from pssl.claims.budgets import DISCRIMINATIVE, Budget

MEASURES = {
    "content": "content: linear-probe test accuracy",
    "style": "style: mean linear-probe test score over the recorded style factors (accuracy / R^2)",
    "structure": "within/across-item variance ratio over augmented views (lower: views clustered)",
}
"""Each measure's description, as the table prints it."""

CLAIM_TEXT = {
    "C1": "SimVAE improves over the VAE on content (simple images)",
    "C2": "SimVAE improves over discriminative SSL on content (simple images)",
    "C3": "SimVAE outperforms discriminative SSL where style is required",
    "C4": "discriminative SSL induces the model's latent structure (views of an item clustered)",
    "C5": "features before the projection head keep more style than after it",
    "C6": "SimVAE narrows the gap to discriminative SSL on complex data (CIFAR-10)",
}


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a method, and which representation of it is read."""

    method: str
    representation: str = "backbone"

    @property
    def label(self) -> str:
        return self.method if self.representation == "backbone" else f"{self.method} ({self.representation})"


@dataclass(frozen=True)
class Comparison:
    """One row of the claims table before any number is read.

    Attributes:
        claim: ``C1`` ... ``C6``.
        data: the data set both sides were trained on.
        measure: a key of :data:`MEASURES`.
        method: the side the claim is about.
        comparator: the other side.
        sign: +1 if a higher measure supports the claim, -1 if a lower one does.
        run: whether the budget runs it (``False``: "not run at this budget").
    """

    claim: str
    data: str
    measure: str
    method: Side
    comparator: Side
    sign: int = 1
    run: bool = True


def comparisons(budget: Budget) -> list[Comparison]:
    """Every comparison of every claim under ``budget``, in table order."""
    rows: list[Comparison] = []
    discriminative = [m for m in budget.methods if m in DISCRIMINATIVE]
    simvae, vae = Side("simvae"), Side("vae")
    content_names = [d.name for d in budget.content_data]
    styled = budget.styled_data.name
    for data in content_names:
        rows.append(Comparison("C1", data, "content", simvae, vae))
    for data in content_names:
        for method in discriminative:
            rows.append(Comparison("C2", data, "content", simvae, Side(method)))
    for method in discriminative:
        rows.append(Comparison("C3", styled, "style", simvae, Side(method)))
    for data in budget.structure_data:
        for method in discriminative:
            rows.append(Comparison("C4", data, "structure", Side(method), vae, sign=-1))
    for method in discriminative:
        rows.append(Comparison("C5", styled, "style", Side(method), Side(method, "projection")))
    if budget.complex_data is not None:
        rows.append(Comparison("C6", budget.complex_data.name, "content", simvae, vae))
    else:
        rows.append(Comparison("C6", "cifar10", "content", simvae, vae, run=False))
    return rows


__all__ = ["CLAIM_TEXT", "MEASURES", "Comparison", "Side", "comparisons"]
