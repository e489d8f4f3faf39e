"""What must not be left in a built page: Sphinx markup and math that was never rendered.

Code (``<pre>``, ``<code>``), MathML, scripts and styles are skipped: a ``$`` in a shell
prompt or a ``:class:`` inside an example is what the author meant to show.

Example:
    >>> leftovers("<p>see :class:`MLP` and $x$</p><pre>$ flows fit</pre>")
    ["raw Sphinx role ':class:`MLP`'", "unrendered math '$x$'"]
"""

from __future__ import annotations

__all__ = ["leftovers", "remote_resources", "visible_text"]

import re

_SKIPPED = re.compile(
    r"<(?P<tag>pre|code|script|style|math|textarea)\b[^>]*>.*?</(?P=tag)>", re.S | re.I
)
_TAG = re.compile(r"<[^>]+>")
_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|obj|exc|math|py|ref):`[^`]*`?")
_DIRECTIVE = re.compile(r"\.\. (?:math|note|warning|code-block)::")
_DOLLARS = re.compile(r"\$\$?[^$]{0,60}\$?\$?")
_ARITHMATEX = re.compile(r'class="arithmatex"')
# What a browser fetches by itself: scripts, stylesheets, images, fonts, frames (not links).
_REMOTE = re.compile(
    r"<(?:script|img|iframe|source)\b[^>]*\bsrc=\"(?P<a>(?:https?:)?//[^\"]+)\""
    r"|<link\b[^>]*\bhref=\"(?P<b>(?:https?:)?//[^\"]+)\"[^>]*>"
    r"|url\((?P<c>[\"']?(?:https?:)?//[^)]+)\)"
)


def visible_text(page: str) -> str:
    """The text of an HTML page outside code, math, scripts and styles."""
    return _TAG.sub(" ", _SKIPPED.sub(" ", page))


def remote_resources(page: str) -> list[str]:
    """What the page would fetch from the network when opened (the site must work offline).

    Example:
        >>> remote_resources(
        ...     '<script src="https://cdn.example/x.js"></script><a href="https://a">'
        ... )
        ["fetches 'https://cdn.example/x.js'"]
    """
    found = []
    for match in _REMOTE.finditer(page):
        url = match.group("a") or match.group("b") or match.group("c")
        tag = match.group(0)
        if tag.startswith("<link") and not re.search(r'rel="(?:stylesheet|preload|icon)', tag):
            continue  # a canonical URL or an alternate link is not fetched
        found.append(f"fetches {url.strip(chr(34) + chr(39))!r}")
    return found


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
