"""The CLI reference, generated from the ``flows`` command's own argparse parser.

Every subcommand gets its usage line, its description and a table of its arguments with the
help text the command prints (defaults included), so the page says what ``--help`` says.
"""

from __future__ import annotations

__all__ = ["reference"]

import argparse
import os

from flows.cli.main import build_parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", r"\|")


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    rows = ["| argument | value | meaning |", "| --- | --- | --- |"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.option_strings:
            names = ", ".join(f"`{name}`" for name in action.option_strings)
            takes = action.nargs != 0
            value = f"`{formatter._metavar_formatter(action, action.dest.upper())(1)[0]}`"
            value = value if takes else ""
        else:
            names = f"`{action.metavar or action.dest}`"
            value = "required"
        # argparse's own expansion: %(default)s and the formatter's "(default: ...)".
        meaning = formatter._expand_help(action) if action.help else ""
        rows.append(f"| {names} | {value} | {_cell(meaning)} |")
    return rows


def reference() -> str:
    """Markdown: the command, then every subcommand in the order ``flows --help`` lists them."""
    # argparse wraps usage lines to the terminal's width: the width of the page's code blocks.
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "80"
    try:
        return _reference()
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns


def _reference() -> str:
    parser = build_parser()
    out = [
        f"{parser.description}",
        "",
        "```text",
        parser.format_usage().strip(),
        "```",
        "",
        "| command | what it does |",
        "| --- | --- |",
    ]
    commands = _subcommands(parser)
    helps = {
        choice.dest: choice.help
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for choice in action._choices_actions
    }
    for name in commands:
        out.append(f"| [`flows {name}`](#flows-{name}) | {_cell(helps.get(name) or '')} |")
    out += ["", *_arguments(parser)]
    for name, sub in commands.items():
        out += [
            "",
            f"## `flows {name}` {{#flows-{name}}}",
            "",
            _cell(sub.description or ""),
            "",
            "```text",
            sub.format_usage().strip(),
            "```",
            "",
            *_arguments(sub),
        ]
    return "\n".join(out) + "\n"
