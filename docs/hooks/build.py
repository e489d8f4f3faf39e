"""mkdocs hooks of the flows site: generated pages, generated pictures, math, and checks.

- ``on_config``: the API reference's navigation, generated from the package tree.
- ``on_files``: the reference pages (:mod:`flowsdoc.reference`) and every picture
  (:mod:`flowsdoc.figures`, :mod:`flowsdoc.bench`) are added to the site as it is built.
- ``on_page_markdown``: a marker ``<!-- gen: NAME -->`` in a page is replaced by generated
  markdown (the plugin catalogue, the CLI reference, the benchmark tables).
- ``on_post_page``: math becomes MathML; Sphinx roles or dollar signs left in a page's text,
  and anything a page would fetch from the network, are reported, which
  ``mkdocs build --strict`` turns into a failure.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from flowsdoc import checks, figures, generated, mathml, reference
from mkdocs.structure.files import File, Files

_LOG = logging.getLogger("mkdocs.plugins.flows")
_MARKER = re.compile(r"<!-- gen: (?P<name>[\w:-]+) -->")


def on_config(config: Any) -> Any:
    nav = config["nav"]
    for i, item in enumerate(nav):
        if isinstance(item, dict) and item.get("API reference") == "reference/index.md":
            nav[i] = {"API reference": reference.nav()}
            break
    else:
        _LOG.warning("the nav has no 'API reference: reference/index.md' entry to fill")
    return config


def on_files(files: Files, config: Any) -> Files:
    for page in reference.pages():
        files.append(File.generated(config, page.uri, content=page.markdown))
    for name, png in figures.all_figures().items():
        files.append(File.generated(config, f"figures/{name}", content=png))
    files.append(File.generated(config, f"assets/fonts/{mathml.FONT}", content=mathml.font()))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        try:
            return generated.markdown(name)
        except KeyError:
            _LOG.warning(f"{page.file.src_uri}: unknown generated block {name!r}")
            return match.group(0)

    return _MARKER.sub(replace, markdown)


def on_post_page(output: str, page: Any, config: Any) -> str:
    output, problems = mathml.render(output)
    problems += checks.leftovers(output) + checks.remote_resources(output)
    for problem in problems:
        _LOG.warning(f"{page.file.src_uri}: {problem}")
    return output
