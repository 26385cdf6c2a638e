"""``pssl demo``: SimVAE against the plain VAE on the embedded digits, in a few minutes on a laptop CPU."""

from __future__ import annotations

from pathlib import Path

from pssl.config import Component, Config, apply_overrides, parse_overrides

DEMO_MODELS = ("simvae", "vae")


def demo_config(model: str, out: Path, overrides: list[str]) -> Config:
    """The demo's settings: digits, MLP, latent 10, J = 2, Adam 1e-3 (the data set is small)."""
    base = Config(
        model=Component(model),
        data=Component("digits"),
        latent_dim=10,
        num_views=2,
        batch_size=64,
        epochs=60,
        lr=1e-3,
        adam_eps=1e-8,
        seed=0,
        out=str(out / model),
        progress=False,
    )
    return apply_overrides(base, parse_overrides(overrides))


def run_demo(overrides: list[str] | None = None, *, out: str | Path = "runs/demo") -> dict[str, dict]:
    """Train and evaluate each demo model; print a table and return the metrics by model.

    ``overrides`` apply to every model (e.g. ``epochs=5``); a finished model's run is
    reused when its directory already holds metrics for the same configuration.
    """
    from pssl.experiment import run_experiment

    overrides = list(overrides or [])
    out_dir = Path(out)
    for token in overrides:
        if token.startswith("out="):
            out_dir = Path(token.split("=", 1)[1])
    overrides = [t for t in overrides if not t.startswith("out=")]
    results: dict[str, dict] = {}
    for model in DEMO_MODELS:
        config = demo_config(model, out_dir, overrides)
        print(f"training {model} on {config.data.name} for {config.epochs} epochs ...", flush=True)
        results[model] = run_experiment(config)
    print()
    print(format_table(results))
    print(f"\nrun directories: {out_dir}/<model> (metrics.json, reconstructions.png, loss_curves.png)")
    return results


def format_table(results: dict[str, dict]) -> str:
    """Markdown table: test accuracy of each probe, validation ELBO, seconds per epoch."""
    probes: list[str] = []
    for metrics in results.values():
        for name, value in metrics.get("content", {}).items():
            if isinstance(value, dict) and "accuracy" in value and name not in probes:
                probes.append(name)
    header = ["model", *[f"{p} probe acc" for p in probes], "val ELBO (nats/item)", "s/epoch"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, metrics in results.items():
        content = metrics.get("content", {})
        training = metrics.get("training", {})
        elbo = training.get("final_terms_nats_per_item", {}).get("val_elbo", float("nan"))
        cells = [model]
        cells += [f"{content[p]['accuracy']:.3f}" if p in content else "-" for p in probes]
        cells += [f"{elbo:.1f}", f"{training.get('seconds_per_epoch', float('nan')):.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
