"""The markdown a page asks for with ``<!-- gen: NAME -->``, produced while the site is built.

Each name maps to a function of no arguments returning markdown; an unknown name is a
``KeyError`` (the build reports it).
"""

from __future__ import annotations

__all__ = ["GENERATORS", "markdown"]

from collections.abc import Callable


def _catalogue(kind: str) -> Callable[[], str]:
    def generate() -> str:
        from flowsdoc import catalogue

        return getattr(catalogue, kind)()

    return generate


def _bench(name: str, *args: str) -> Callable[[], str]:
    def generate() -> str:
        from flowsdoc import bench

        return getattr(bench, name)(*args)

    return generate


def _changelog() -> str:
    """The repository's CHANGELOG.md, less its title (the page has its own)."""
    from flowsdoc import api

    text = (api.ROOT / "CHANGELOG.md").read_text()
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join(lines) + "\n"


def _cli() -> str:
    from flowsdoc import clidoc

    return clidoc.reference()


GENERATORS: dict[str, Callable[[], str]] = {
    "catalogue:transforms": _catalogue("transforms"),
    "catalogue:presets": _catalogue("presets"),
    "catalogue:plugins": _catalogue("plugins"),
    "cli:reference": _cli,
    "changelog": _changelog,
    "bench:speed": _bench("speed_tables"),
    "bench:targets": _bench("targets_table"),
    "bench:commands": _bench("commands_table"),
    "bench:quality": _bench("quality_table"),
    "bench:presets": _bench("presets_table"),
    "bench:speed-provenance": _bench("provenance", "bench.json"),
    "bench:quality-provenance": _bench("provenance", "quality.json"),
    "bench:presets-provenance": _bench("provenance", "presets.json"),
}


def markdown(name: str) -> str:
    """The generated markdown for ``name``."""
    return GENERATORS[name]()
