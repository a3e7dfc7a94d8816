"""README's table of the ``consent`` command has a row of its own for every command (``reports catch-up`` had none)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click

from app.cli import main

README = Path(__file__).parents[2] / "README.md"


def _commands(command: click.Command, path: tuple[str, ...]) -> Iterator[str]:
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path)


def test_every_command_and_the_reports_catch_up_has_a_row_of_its_own_in_the_readme():
    rows = [line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("| `consent ")]
    commands = list(_commands(main, ("consent",)))
    assert "consent reports catch-up" in commands
    missing = [name for name in commands if not any(re.match(rf"\| `{re.escape(name)}[` ]", row) for row in rows)]
    assert missing == []
