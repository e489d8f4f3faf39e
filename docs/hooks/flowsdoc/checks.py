"""What must not be left in a built page: Sphinx markup and math that was never rendered.

Code (``<pre>``, ``<code>``), MathML, scripts and styles are skipped: a ``$`` in a shell
prompt or a ``:class:`` inside an example is what the author meant to show.

Example:
    >>> leftovers("<p>see :class:`MLP` and $x$</p><pre>$ flows fit</pre>")
    ["raw Sphinx role ':class:`MLP`'", "unrendered math '$x$'"]
"""

from __future__ import annotations

__all__ = ["leftovers", "visible_text"]

import re

_SKIPPED = re.compile(
    r"<(?P<tag>pre|code|script|style|math|textarea)\b[^>]*>.*?</(?P=tag)>", re.S | re.I
)
_TAG = re.compile(r"<[^>]+>")
_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|obj|exc|math|py|ref):`[^`]*`?")
_DIRECTIVE = re.compile(r"\.\. (?:math|note|warning|code-block)::")
_DOLLARS = re.compile(r"\$\$?[^$]{0,60}\$?\$?")
_ARITHMATEX = re.compile(r'class="arithmatex"')


def visible_text(page: str) -> str:
    """The text of an HTML page outside code, math, scripts and styles."""
    return _TAG.sub(" ", _SKIPPED.sub(" ", page))


def leftovers(page: str) -> list[str]:
    """Raw Sphinx roles and directives, and unrendered math, in the visible text of a page."""
    found = []
    text = visible_text(page)
    found += [f"raw Sphinx role {m.group(0)!r}" for m in _ROLE.finditer(text)]
    found += [f"raw Sphinx directive {m.group(0)!r}" for m in _DIRECTIVE.finditer(text)]
    found += [f"unrendered math {m.group(0).strip()!r}" for m in _DOLLARS.finditer(text)]
    if _ARITHMATEX.search(page):
        found.append("an arithmatex formula was not converted to MathML")
    return found
