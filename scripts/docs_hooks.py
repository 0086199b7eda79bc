"""mkdocs hooks: the reference pages are rendered from the programs themselves, so they cannot
drift from what the commands accept.

A page asks for a generated block with an HTML comment on a line of its own:

- ``<!-- generated: sio-master options -->``: a table of every ``sio-master`` option (name,
  environment variable, default, help), read from the click command's parameters;
- ``<!-- generated: help COMMAND... -->``: the ``--help`` text of an installed command
  (e.g. ``sio-cleanup``, ``sio-master balancer-config``), run at build time.

``mkdocs.yml`` names this file under ``hooks:``; ``tests/docs/`` imports it too.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

MARKER = re.compile(r"^<!-- generated: (.+?) -->$", re.MULTILINE)


def render_options(command: click.Command | None = None) -> str:
    """A Markdown table of ``command``'s options (default: ``sio-master``'s)."""
    if command is None:
        from sio_cluster.master.cli import main

        command = main
    rows = [
        "| option | environment variable | default | meaning |",
        "|---|---|---|---|",
    ]
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden or not param.expose_value:
            continue  # --version: an action, not a setting
        rows.append(
            f"| {option_names(param)} | `{param.envvar or ''}` | {default_of(param)} "
            f"| {cell(param.help or '')} |"
        )
    return "\n".join(rows) + "\n"


def option_names(param: click.Option) -> str:
    names = ", ".join(f"`{name}`" for name in param.opts)
    if param.is_flag:
        return names
    if isinstance(param.type, click.Choice):
        return f"{names} " + " / ".join(f"`{choice}`" for choice in param.type.choices)
    return f"{names} `{param.type.name.upper()}`"


def default_of(param: click.Option) -> str:
    """The default as the user would type it; the CPU count of the build machine is not one."""
    if param.name == "workers":
        return "CPU count"
    default: Any = param.get_default(click.Context(click.Command("docs")), call=False)
    if param.is_flag:
        return "off" if not default else "on"
    if param.multiple and not isinstance(default, list | tuple):
        return "none"  # click 8.3 marks a repeatable option without a default as unset
    if default is None or default == "" or default == ():
        return "none"
    if isinstance(default, list | tuple):
        return " ".join(f"`{value}`" for value in default)
    return f"`{default}`"


def cell(text: str) -> str:
    """Help text inside a table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def render_help(command: list[str]) -> str:
    """``<command> --help`` (a console script installed beside this interpreter), as a fenced
    text block."""
    program = Path(sys.executable).parent / command[0]
    result = subprocess.run(
        [str(program), *command[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return "```text\n" + result.stdout.rstrip() + "\n```\n"


def render(directive: str) -> str:
    if directive == "sio-master options":
        return render_options()
    if directive.startswith("help "):
        return render_help(directive.removeprefix("help ").split())
    raise ValueError(f"unknown generated block {directive!r}")


def expand(markdown: str) -> str:
    """``markdown`` with every generated-block marker replaced by its rendering."""
    return MARKER.sub(lambda match: render(match.group(1)), markdown)


def on_page_markdown(markdown: str, **_: Any) -> str:
    return expand(markdown)
