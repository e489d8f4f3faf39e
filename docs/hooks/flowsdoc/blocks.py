r"""The code of a page, run in order: what keeps the docs from rotting.

A page's fenced blocks are taken in order:

- a ``python`` block runs in the page's one namespace; what it prints is checked against the
  ``text`` block right after it, if there is one (only blank lines between the two);
- a block with a ``title="PATH"`` on its fence (shown as a file name) is not run: it is
  written to ``PATH`` under the page's working folder (a plugin's hook module, its
  ``pyproject.toml``, a training script); so is a block whose first line is ``# file: PATH``;
- a ``console`` block runs each ``$ command`` line with bash in the working folder, and checks
  what it prints (stdout and stderr) against the lines that follow it, up to the next ``$``.

In expected output, ``...`` matches anything (on one line or across lines), as doctest's
ELLIPSIS does; trailing spaces are ignored. Each page runs in a fresh temporary folder, with the
folder on ``sys.path`` so that files a page writes can be imported; commands find this
interpreter's ``python``, ``flows`` and ``torchrun`` first.

Example:
    >>> page = "```python\nprint(1 + 1)\n```\n\n```text\n2\n```\n"
    >>> [(b.kind, b.code, b.expected) for b in extract(page)]
    [('python', 'print(1 + 1)\n', '2\n')]
"""

from __future__ import annotations

__all__ = ["Block", "BlockFailure", "extract", "matches", "run_page"]

import contextlib
import dataclasses
import io
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<lang>[\w+-]*)(?P<attrs>[^\n]*)\n"
    r"(?P<body>.*?)"
    r"^(?P=indent)(?P=fence)[ \t]*$",
    re.M | re.S,
)
_FILE = re.compile(r"^(?:#|//)\s*file:\s*(?P<path>\S+)\s*\n")
_TITLE = re.compile(r'title="(?P<path>[^"]+)"')


@dataclasses.dataclass
class Block:
    """One runnable block of a page."""

    kind: str  # "python", "file" or "console"
    code: str
    line: int
    expected: str | None = None
    path: str | None = None


class BlockFailure(AssertionError):
    """A block raised, or printed something other than its output block says."""


def _dedent(body: str, indent: str) -> str:
    return "".join(
        line[len(indent) :] if line.startswith(indent) else line
        for line in body.splitlines(keepends=True)
    )


def extract(markdown: str) -> list[Block]:
    """The runnable blocks of a page, in order, each with its expected output."""
    blocks: list[Block] = []
    previous_end = 0
    for match in _FENCE.finditer(markdown):
        lang = match.group("lang").lower()
        body = _dedent(match.group("body"), match.group("indent"))
        line = markdown.count("\n", 0, match.start()) + 1
        between = markdown[previous_end : match.start()]
        previous_end = match.end()
        if lang == "text" and blocks and blocks[-1].kind == "python" and not between.strip():
            if blocks[-1].expected is None:
                blocks[-1].expected = body
            continue
        file = _FILE.match(body)
        title = _TITLE.search(match.group("attrs"))
        if file is not None:
            blocks.append(Block("file", body[file.end() :], line, path=file.group("path")))
        elif title is not None and lang not in {"console", "text"}:
            blocks.append(Block("file", body, line, path=title.group("path")))
        elif lang in {"python", "py"}:
            blocks.append(Block("python", body, line))
        elif lang == "console":
            blocks.append(Block("console", body, line))
    return blocks


def _normalize(text: str) -> str:
    lines = [line.rstrip() for line in text.strip("\n").splitlines()]
    return "\n".join(lines)


def matches(expected: str, actual: str) -> bool:
    """Whether ``actual`` is ``expected``, ``...`` standing for any text."""
    pattern = ".*?".join(re.escape(part) for part in _normalize(expected).split("..."))
    return re.fullmatch(pattern, _normalize(actual), re.S) is not None


def _console(block: Block, cwd: Path, env: dict[str, str]) -> None:
    commands: list[tuple[str, list[str]]] = []
    for line in block.code.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            commands[-1][1].append(line)
        elif line.strip():
            raise BlockFailure(f"console block at line {block.line}: {line!r} before any '$ '")
    for command, expected in commands:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # interleaved as a terminal shows them
            text=True,
            timeout=600,
        )
        output = done.stdout
        if not matches("\n".join(expected), output):
            raise BlockFailure(
                f"console block at line {block.line}: `{command}` printed\n{output}\n"
                f"expected\n" + "\n".join(expected)
            )


def run_page(markdown: str, folder: Path, name: str = "page") -> None:
    """Run every block of a page in order, in ``folder``; raise at the first failure.

    Raises:
        BlockFailure: naming the page, the block's line, and the exception or the output that
            did not match.
    """
    namespace: dict[str, object] = {"__name__": "docs_" + re.sub(r"\W", "_", name)}
    # Commands run with this interpreter's environment first on PATH (python, flows, torchrun).
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "PYTHONUNBUFFERED": "1"}
    here = Path.cwd()
    os.chdir(folder)
    sys.path.insert(0, str(folder))
    try:
        for block in extract(markdown):
            if block.kind == "file":
                target = folder / str(block.path)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(block.code)
                continue
            if block.kind == "console":
                _console(block, folder, env)
                continue
            printed = io.StringIO()
            try:
                code = compile(block.code, f"{name}:{block.line}", "exec")
                with contextlib.redirect_stdout(printed):
                    exec(code, namespace)
            except Exception as error:
                raise BlockFailure(
                    f"{name}: the block at line {block.line} raised\n"
                    + "".join(traceback.format_exception(error))
                ) from error
            if block.expected is not None and not matches(block.expected, printed.getvalue()):
                raise BlockFailure(
                    f"{name}: the block at line {block.line} printed\n{printed.getvalue()}\n"
                    f"but its output block says\n{block.expected}"
                )
    finally:
        sys.path.remove(str(folder))
        os.chdir(here)
