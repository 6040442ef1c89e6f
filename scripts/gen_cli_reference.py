"""Write docs/cli.md from the CLI's own --help, so the reference cannot drift (a unit test compares)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from kumiai.main import app

TARGET = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def command_paths(command: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group, depth first (typer ships its own click, so groups are known by their commands)."""
    paths = [prefix]
    subcommands = getattr(command, "commands", {})
    for name in sorted(subcommands):
        paths += command_paths(subcommands[name], (*prefix, name))
    return paths


def render() -> str:
    runner = CliRunner()
    env = {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb", "_TYPER_FORCE_DISABLE_TERMINAL": "1"}
    parts = [
        "# kumiai command reference",
        "",
        "Generated from `kumiai --help` by `scripts/gen_cli_reference.py`;",
        "a unit test fails when it is stale.",
        "",
    ]
    for path in command_paths(typer.main.get_command(app)):
        result = runner.invoke(app, [*path, "--help"], env=env, prog_name="kumiai")
        text = "\n".join(line.rstrip() for line in result.output.strip().splitlines())
        parts += [f"## kumiai {' '.join(path)}".rstrip(), "", "```", text, "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if TARGET.exists() and TARGET.read_text(encoding="utf-8") == render() else 1)
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(render(), encoding="utf-8")
