r"""Math rendered when the site is built: arithmatex's LaTeX becomes MathML.

``pymdownx.arithmatex`` (generic mode) wraps ``$x$`` in ``<span class="arithmatex">\(x\)</span>``
and ``$$...$$`` in a ``<div>``; every browser of the last years draws MathML itself, so the
pages need no JavaScript and no network to show math. A formula latex2mathml cannot convert is
a problem the build reports.

Browsers stretch fences and lay out fractions with a font's OpenType MATH table, which many
systems lack: the site serves the STIX Two Math font (SIL Open Font License) that the
``ziamath`` package ships, so math looks the same everywhere, offline.

Example:
    >>> html, problems = render('<span class="arithmatex">\\(x_i &lt; 1\\)</span>')
    >>> html.startswith('<math xmlns="http://www.w3.org/1998/Math/MathML" display="inline">')
    True
"""

from __future__ import annotations

__all__ = ["FONT", "font", "render"]

import html as _html
import importlib.util
import re
from pathlib import Path

from latex2mathml.converter import convert

FONT = "STIXTwoMath-Regular.ttf"

_INLINE = re.compile(r'<span class="arithmatex">\\\((?P<tex>.*?)\\\)</span>', re.S)
_BLOCK = re.compile(r'<div class="arithmatex">\\\[(?P<tex>.*?)\\\]</div>', re.S)
# latex2mathml writes \log as an identifier, which browsers set tight against its argument;
# TeX puts a thin space there.
_FUNCTION = re.compile(
    r"<mi>(?P<name>log|exp|sin|cos|tan|sinh|cosh|tanh|arcsin|arccos|arctan|ln)</mi>"
)


def font() -> bytes:
    """The math font the site serves, read from the ziamath package without importing it."""
    spec = importlib.util.find_spec("ziamath")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the site's math font comes with ziamath: pip install ziamath")
    return (Path(spec.origin).parent / "fonts" / FONT).read_bytes()


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
            problems.append(f"cannot render math {tex!r}: {type(error).__name__} {error}".strip())
            return match.group(0)
        mathml = _FUNCTION.sub(r'<mi>\g<name></mi><mspace width="0.1667em"/>', mathml)
        if display == "block":
            return f'<div class="flows-math">{mathml}</div>'
        return mathml

    page = _BLOCK.sub(lambda m: replace(m, "block"), page)
    page = _INLINE.sub(lambda m: replace(m, "inline"), page)
    return page, problems
