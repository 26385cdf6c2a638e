"""Break each guarded line once and check that its test fails (then put the line back).

Each mutation replaces one exact piece of source with a plausible one-line bug and
runs the tests that guard it; a mutation the tests do not catch is a test that cannot
fail. Prints one row per mutation and the count caught.

    nice -n 10 python benchmarks/edge_mutations.py            # all
    nice -n 10 python benchmarks/edge_mutations.py momentum   # names containing 'momentum'

The source is restored after every mutation (also on Ctrl-C).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (name, file, original, mutated, tests); original and mutated may be tuples of pieces replaced together
MUTATIONS = [
    (
        "linear ties: largest C",
        "pssl/evaluation/linear.py",
        "key=lambda c: (by_c[c][0], -c)",
        "key=lambda c: (by_c[c][0], c)",
        "tests/test_edge_properties.py::test_linear_ties_choose_the_smallest_c_whatever_the_grid_order",
    ),
    (
        "knn/ridge ties: last tied setting",
        "pssl/evaluation/protocol.py",
        "(best is None or value > best)",
        "(best is None or value >= best)",
        "tests/test_edge_properties.py -k ties",
    ),
    (
        "compare summary counts NaN",
        "pssl/compare.py",
        "if value is not None and not (isinstance(value, float) and math.isnan(value)):",
        "if value is not None:",
        "tests/test_edge_properties.py -k nan",
    ),
    (
        "terms ignore the particle count",
        "inference/objectives.py",
        "terms = {name: value / (particles * count) for name, value in sums.items()}",
        "terms = {name: value / count for name, value in sums.items()}",
        "tests/test_edge_properties.py -k several_particles",
    ),
    (
        "IWAE reduces over items",
        "pssl/diagnostics/importance.py",
        "return torch.logsumexp(log_weights, 0) - math.log(k), log_weights.mean(0)",
        "return torch.logsumexp(log_weights, -1) - math.log(k), log_weights.mean(0)",
        "tests/test_edge_properties.py -k draws_not_items",
    ),
    (
        "conjugate posterior assumes J = 2",
        "models/simvae.py",
        "data_precision = num_views / view_scale.pow(2)",
        "data_precision = 2 / view_scale.pow(2)",
        "tests/test_edge_properties.py -k conjugate",
    ),
    (
        "range check bound fixed at 1",
        "pssl/augment.py",
        "if too_low or b > high or a > b:",
        "if too_low or b > 1.0 or a > b:",
        "tests/test_edge_properties.py -k 'range_checks or hue'",
    ),
    (
        "momentum update skips the key head",
        "models/contrastive.py",
        "((self.backbone, self.key_backbone), (self.head, self.key_head))",
        "((self.backbone, self.key_backbone),)",
        "tests/test_edge_properties.py -k key_network",
    ),
    (
        "numeric options accept NaN",
        "pssl/registry.py",
        "if not math.isfinite(number):",
        "if False:",
        "tests/test_refusals.py -k 'non_finite and (augment or lr or prior)'",
    ),
    (
        "factory refusals name the parameter, not the option",
        "pssl/registry.py",
        'raise type(err)(f"{self.key}={name} with {typed}: {err}") from err',
        "raise",
        "tests/test_refusals.py -k name_the_option_typed",
    ),
    (
        "entry points unchecked",
        "models/base.py",
        'if callable(method) and not getattr(method, "_pssl_checked", False):',
        "if False:",
        "tests/test_refusals.py -k 'entry_points or uint8'",
    ),
    (
        "paired methods on plain data",
        "inference/compose.py",
        'if getattr(method, "needs_paired_data", False) and not data.paired:',
        "if False:",
        "tests/test_refusals.py -k 'clip or multimodal'",
    ),
    (
        "lock follows links (both defences removed: pre-check and O_NOFOLLOW)",
        "pssl/rundir.py",
        ("    if lock_path.is_symlink():", 'os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)'),
        ("    if False:", "os.O_RDWR | os.O_CREAT"),
        "tests/test_folder_safety.py -k 'symlink and evaluate'",
    ),
    (
        "a lock alone makes a folder pssl's",
        "pssl/rundir.py",
        '    if kind == "run" and is_run_directory(folder):\n        return\n    if kind != "run"',
        "    if (folder / LOCK_NAME).is_file():\n        return\n"
        '    if kind == "run" and is_run_directory(folder):\n'
        '        return\n    if kind != "run"',
        "tests/test_folder_safety.py -k stray_lock",
    ),
    (
        "torch's advice passes through",
        "inference/checkpoint.py",
        'f"({_torch_reason(err)})"',
        'f"({err})"',
        "tests/test_messages.py -k random_bytes",
    ),
    (
        "collectives wait for ranks that left",
        "pssl/collectives.py",
        '    if getattr(_scope, "one_process", 0):\n        return False\n',
        "",
        "tests/test_readme_torchrun.py -k simclr-2proc",
    ),
    (
        "pyproject drops pssl.evaluation",
        "pyproject.toml",
        '    "pssl.evaluation",\n',
        "",
        "tests/test_packaging.py -k listed",
    ),
]


def run(tests: str) -> bool:
    """Whether the tests pass."""
    command = f"{sys.executable} -m pytest -q -x -p no:cacheprovider -m '' {tests}"
    done = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True)
    return done.returncode == 0


def main(selected: list[str]) -> int:
    rows = []
    for name, file, original, mutated, tests in MUTATIONS:
        if selected and not any(s in name for s in selected):
            continue
        path = ROOT / file
        source = path.read_text()
        pairs = (original, mutated) if isinstance(original, tuple) else ((original,), (mutated,))
        pieces = list(zip(*pairs))
        if any(source.count(old) != 1 for old, _ in pieces):
            rows.append((name, "NOT APPLIED (source changed)"))
            print(f"{name:<55s} {rows[-1][1]}", flush=True)
            continue
        changed = source
        for old, new in pieces:
            changed = changed.replace(old, new)
        start = time.monotonic()
        try:
            path.write_text(changed)
            caught = not run(tests)
        finally:
            path.write_text(source)
        rows.append((name, f"{'caught' if caught else 'MISSED'} ({time.monotonic() - start:.0f} s)"))
        print(f"{name:<55s} {rows[-1][1]}", flush=True)
    caught = sum(1 for _, result in rows if result.startswith("caught"))
    print(f"\n{caught} of {len(rows)} mutations caught")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
