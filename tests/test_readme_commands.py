"""The README's ``scorefield`` commands name files the repository ships (or files an earlier command
writes), and the command-line section runs as written, with only the training shortened."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from scorefield.cli import main

ROOT = Path(__file__).parents[1]
INPUTS = ("--config", "--data", "--mask", "--labels")


def readme_commands() -> list[list[str]]:
    """Every ``scorefield`` command of the README's bash blocks, continuation lines joined, comments cut."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["scorefield"]:
                commands.append(words[1:])
    return commands


def inputs(args: list[str]) -> list[str]:
    """The files a command reads: its input flags' values and ``--set data.path=...``."""
    named = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in INPUTS]
    named += [a.partition("=")[2] for a in args if a.startswith("data.path=")]
    return named


def outputs(args: list[str]) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in ("--out", "--run")]


def test_every_file_a_readme_command_reads_ships_or_is_written_before():
    commands = readme_commands()
    assert len(commands) >= 10
    written: list[str] = []
    for args in commands:
        for name in inputs(args):
            if name.startswith("/"):  # the user's own files (MNIST, CIFAR-10): never downloaded or shipped
                continue
            made = any(name == out or name.startswith(out.rstrip("/") + "/") for out in written)
            assert made or (ROOT / name).is_file(), f"`scorefield {' '.join(args)}` reads {name}"
        written += outputs(args)


SHORTER = {"train": ["--set", "train.steps=40", "--quiet"], "tune": ["--iterations", "2", "--starts", "1"]}


@pytest.mark.slow
def test_the_command_line_section_runs_as_written(capsys, tmp_path, monkeypatch):
    """Every command of the README's command-line and labelled-data examples on tables, from a folder
    holding the repository's configs/ and examples/, training shortened to 40 steps."""
    for name in ("configs", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    tables = [args for args in readme_commands() if not any("digits" in a or "mnist" in a or "cifar" in a
                                                            for a in args)]  # fmt: skip
    assert any(args[:1] == ["plot"] and "field" in args for args in tables)
    for args in tables:
        extra = SHORTER.get(args[0], []) + (["--quiet"] if args[0] in ("sample", "inpaint") else [])
        code = main([*args, *extra])
        _, err = capsys.readouterr()
        assert code == 0, f"`scorefield {' '.join(args)}`: {err}"
