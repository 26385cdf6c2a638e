"""The README's own code blocks: the Python block runs (one epoch), the command lines name real commands."""

from __future__ import annotations

import shlex

import pyro
import pytest
from doc_blocks import ROOT, blocks

from pssl.cli import COMMANDS, main

README = ROOT / "README.md"


def test_readme_python_block_trains_encodes_and_reloads(tmp_path, monkeypatch) -> None:
    found = blocks(README, "## Python", "python")
    assert len(found) == 1, "README should hold one python block under 'Python'"
    code = found[0]
    assert "epochs=20" in code
    monkeypatch.chdir(tmp_path)
    pyro.clear_param_store()
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(code.replace("epochs=20", "epochs=1"), str(README), "exec"), namespace)
    assert tuple(namespace["means"].shape) == (5, 10)
    assert namespace["again"] is not None
    pyro.clear_param_store()


def command_lines() -> list[list[str]]:
    found = blocks(README, "## Command line", "bash")
    assert found, "README has no bash block under 'Command line'"
    return [shlex.split(line, comments=True) for line in found[0].splitlines() if line.startswith("pssl ")]


def test_readme_command_lines_use_existing_commands() -> None:
    lines = command_lines()
    assert len(lines) >= 10
    for tokens in lines:
        name = tokens[1]
        assert name.startswith("--") or name in COMMANDS, tokens


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"]])
def test_readme_help_lines_run(argv, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip()
