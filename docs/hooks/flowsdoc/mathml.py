r"""Math rendered when the site is built: arithmatex's LaTeX becomes MathML.

``pymdownx.arithmatex`` (generic mode) wraps ``$x$`` in ``<span class="arithmatex">\(x\)</span>``
and ``$$...$$`` in a ``<div>``; every browser of the last years draws MathML itself, so the
pages need no JavaScript and no network to show math. A formula latex2mathml cannot convert is
a problem the build reports.

Example:
    >>> html, problems = render('<span class="arithmatex">\\(x_i &lt; 1\\)</span>')
    >>> html.startswith('<math xmlns="http://www.w3.org/1998/Math/MathML" display="inline">')
    True
"""

from __future__ import annotations

__all__ = ["render"]

import html as _html
import re

from latex2mathml.converter import convert

_INLINE = re.compile(r'<span class="arithmatex">\\\((?P<tex>.*?)\\\)</span>', re.S)
_BLOCK = re.compile(r'<div class="arithmatex">\\\[(?P<tex>.*?)\\\]</div>', re.S)


def render(page: str) -> tuple[str, list[str]]:
    """Replace every arithmatex formula of an HTML page by MathML.

    Returns:
        The page and the formulas that could not be converted (left as they were).
    """
    problems: list[str] = []

    def replace(match: re.Match[str], display: str) -> str:
        tex = _html.unescape(match.group("tex")).strip()
        try:
            mathml = convert(tex, display=display)
        except Exception as error:  # latex2mathml raises many kinds of errors
            problems.append(f"cannot render math {tex!r}: {error}")
            return match.group(0)
        if display == "block":
            return f'<div class="flows-math">{mathml}</div>'
        return mathml

    page = _BLOCK.sub(lambda m: replace(m, "block"), page)
    page = _INLINE.sub(lambda m: replace(m, "inline"), page)
    return page, problems
