"""Every shell command the docs print runs as printed, and every CLI subcommand has --help."""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

import pytest

from adapters import cli

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(bash|sh|shell)\n(.*?)^```", re.M | re.S)
# A '<' or '>' glued to a word, outside quotes, is a redirection a reader did not mean.
STRAY_REDIRECT = re.compile(r"""^[^'"]*[a-z0-9%][<>][0-9]""")


def _commands() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        for block in FENCE.finditer(doc.read_text()):
            joined = re.sub(r"\\\n", " ", block.group(2))
            for line in joined.splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    out.append((f"{doc.name}: {line.strip()[:60]}", line))
    return out


COMMANDS = _commands()


@pytest.mark.parametrize("line", [c[1] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_every_documented_shell_command_parses_as_printed(line: str) -> None:
    r = subprocess.run(["bash", "-n"], input=line, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not STRAY_REDIRECT.search(line), f"unquoted < or > in: {line}"


def _subcommands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    found = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _subcommands(sub, (*path, name))
    return found


@pytest.mark.parametrize(
    "path", _subcommands(cli.build_parser()), ids=lambda p: " ".join(p) or "(top)"
)
def test_every_subcommand_has_help(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code: object = cli.main([*path, "--help"])
    except SystemExit as done:  # argparse's own --help
        code = done.code
    assert code == 0
    out = capsys.readouterr().out
    assert "usage:" in out


def test_every_option_says_what_it_does() -> None:
    missing = []
    for path in _subcommands(cli.build_parser()):
        parser = cli.build_parser()
        for name in path:
            sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            parser = sub.choices[name]
        for action in parser._actions:
            if action.option_strings and action.help in (None, ""):
                missing.append(f"{' '.join(path)} {action.option_strings[-1]}")
    assert missing == [], missing
