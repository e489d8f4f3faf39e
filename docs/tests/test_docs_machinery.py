"""The site's build code: code blocks, Sphinx roles, math, leftovers and generated pages."""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from flowsdoc import api, bench, blocks, catalogue, checks, clidoc, mathml, reference, roles

# Code blocks


def test_extract_pairs_each_python_block_with_the_output_block_after_it() -> None:
    page = (
        "```python\nx = 1\n```\n\nprose\n\n```text\nnot an output: prose between\n```\n"
        "```python\nprint(x)\n```\n\n```text\n1\n```\n"
        '```python title="pkg/mod.py"\nVALUE = 2\n```\n'
        "```console\n$ echo hi\nhi\n```\n```bash\nnot run\n```\n"
    )
    found = [(b.kind, b.code, b.expected, b.path) for b in blocks.extract(page)]
    assert found == [
        ("python", "x = 1\n", None, None),
        ("python", "print(x)\n", "1\n", None),
        ("file", "VALUE = 2\n", None, "pkg/mod.py"),
        ("console", "$ echo hi\nhi\n", None, None),
    ]


def test_ellipsis_matches_any_text_and_nothing_else_is_loose() -> None:
    assert blocks.matches("loss ... nats\ndone", "loss 0.123 nats\ndone")
    assert blocks.matches("a\n...\nz", "a\nb\nc\nz")
    assert blocks.matches("x  \n", "x")
    assert not blocks.matches("loss 0.12 nats", "loss 0.13 nats")
    assert not blocks.matches("a", "a\nb")


def test_a_page_whose_output_differs_fails_naming_the_block(tmp_path: Path) -> None:
    page = "# t\n\n```python\nprint(2 + 2)\n```\n\n```text\n5\n```\n"
    with pytest.raises(blocks.BlockFailure, match=r"page.md: the block at line 3 printed\n4\n"):
        blocks.run_page(page, tmp_path, "page.md")


def test_a_raising_block_fails_with_its_traceback(tmp_path: Path) -> None:
    page = "```python\nx = 1\n```\n\n```python\nraise KeyError(x)\n```\n"
    with pytest.raises(blocks.BlockFailure, match=r"line 5 raised\n(.|\n)*KeyError: 1"):
        blocks.run_page(page, tmp_path, "page.md")


def test_blocks_share_one_namespace_and_file_blocks_are_importable(tmp_path: Path) -> None:
    page = (
        '```python title="helper.py"\nTWICE = 2\n```\n'
        "```python\nfrom helper import TWICE\nn = 21\n```\n"
        "```python\nprint(n * TWICE)\n```\n\n```text\n42\n```\n"
    )
    blocks.run_page(page, tmp_path, "page.md")
    assert (tmp_path / "helper.py").read_text() == "TWICE = 2\n"


def test_console_blocks_check_each_command_interleaving_stderr(tmp_path: Path) -> None:
    good = "```console\n$ echo out; echo err >&2\nout\nerr\n$ echo two\ntwo\n```\n"
    blocks.run_page(good, tmp_path, "page.md")
    bad = "```console\n$ echo one\ntwo\n```\n"
    with pytest.raises(blocks.BlockFailure, match="`echo one` printed\none"):
        blocks.run_page(bad, tmp_path, "page.md")


# Sphinx roles


@pytest.mark.parametrize(
    ("text", "where", "expected"),
    [
        (":class:`MLP`", "flows.nn.monotonic.MonotonicMLP", "[`MLP`][flows.nn.mlp.MLP]"),
        (
            ":meth:`~Transform.call_and_ladj`",
            "flows.core.transforms.base.OnePassTransform",
            "[`call_and_ladj()`][flows.core.transforms.base.Transform.call_and_ladj]",
        ),
        (
            ":class:`flows.core.MAF`",
            "flows.core.training.fit",
            "[`flows.core.MAF`][flows.core.presets.maf.MAF]",
        ),
        (":mod:`flows.nn.masking`", "flows.nn", "[`flows.nn.masking`][flows.nn.masking]"),
        (":class:`torch.nn.Module`", "flows.nn.mlp.MLP", "`torch.nn.Module`"),
        (":class:`ValueError`", "flows.nn.mlp.MLP", "`ValueError`"),
        (":func:`_split`", "flows.core.training.fit", "`_split()`"),
        (":math:`x_i^2`, :py:`None`", "flows.nn", "$x_i^2$, `None`"),
    ],
)
def test_roles_become_cross_references_or_code(text: str, where: str, expected: str) -> None:
    assert roles.convert(text, where) == (expected, [])


def test_a_name_that_resolves_nowhere_is_a_problem() -> None:
    text, problems = roles.convert("see :class:`NoSuchClass`", "flows.nn.mlp.MLP")
    assert text == "see `NoSuchClass`"
    assert problems == ["flows.nn.mlp.MLP: cannot resolve :class:`NoSuchClass`"]


def test_directives_become_math_and_fenced_blocks() -> None:
    text = (
        "Intro.\n\n.. math:: a = b\n    + c\n\nAfter.\n\n"
        "Arguments:\n    x: a value\n\n        .. math::\n            y = 1\n\n"
        ".. code-block:: python\n\n    def f():\n        return 1\n\nExample:\n    >>> 1\n"
    )
    assert roles.convert(text, "flows.nn")[0] == (
        "Intro.\n\n$$\na = b\n+ c\n$$\n\nAfter.\n\n"
        "Arguments:\n    x: a value\n\n        $$\n        y = 1\n        $$\n\n"
        "```python\ndef f():\n    return 1\n```\n\nExamples:\n    >>> 1\n"
    )


def test_every_docstring_of_the_packages_converts_without_problems() -> None:
    problems = []

    def walk(obj: object) -> None:
        for member in obj.members.values():  # type: ignore[attr-defined]
            if member.is_alias:
                continue
            if member.docstring is not None and not api.is_private(member.path):
                problems.extend(roles.convert(member.docstring.value, member.path)[1])
            walk(member)

    walk(api.tree())
    assert problems == []


# Math and leftovers


def test_math_becomes_mathml_and_bad_math_is_reported() -> None:
    page = (
        '<p><span class="arithmatex">\\(x &lt; 1\\)</span></p>'
        '<div class="arithmatex">\\[\\frac{a}{b}\\]</div>'
    )
    html, problems = mathml.render(page)
    assert problems == []
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="inline">' in html
    assert (
        '<div class="flows-math"><math xmlns="http://www.w3.org/1998/Math/MathML" display="block">'
        in html
    )
    assert "<mfrac>" in html and "<mo>&#x0003C;</mo>" in html and "arithmatex" not in html
    html, problems = mathml.render('<span class="arithmatex">\\(x^\\)</span>')
    assert problems and problems[0].startswith("cannot render math 'x^'")


def test_leftovers_skip_code_and_math_but_see_prose() -> None:
    page = (
        "<p>text :func:`fit` and $x$ and .. math:: y</p>"
        "<pre><code>$ flows fit :class:`x`</code></pre><math><mi>$</mi></math>"
    )
    assert checks.leftovers(page) == [
        "raw Sphinx role ':func:`fit`'",
        "raw Sphinx directive '.. math::'",
        "unrendered math '$x$'",
    ]
    assert checks.leftovers("<p>clean</p><code>$x$</code>") == []


def test_pages_must_not_fetch_anything_from_the_network() -> None:
    page = (
        '<link rel="stylesheet" href="https://fonts.example/css"><link rel="canonical" '
        'href="https://site.example/"><script src="//cdn.example/a.js"></script>'
        '<img src="figures/x.png"><a href="https://zuko.example">zuko</a>'
        "<style>@font-face { src: url('https://fonts.example/f.woff2') }</style>"
    )
    assert checks.remote_resources(page) == [
        "fetches 'https://fonts.example/css'",
        "fetches '//cdn.example/a.js'",
        "fetches 'https://fonts.example/f.woff2'",
    ]


# The generated pages


def _runtime_all(module: Any) -> list[str]:
    """``__all__`` as Python sees it; read from the source for a module needing an extra."""
    try:
        return list(getattr(importlib.import_module(module.path), "__all__", []))
    except ModuleNotFoundError as error:
        if (error.name or "").startswith("flows"):
            raise
        # An optional dependency (flows.core.export's onnxscript): the literal __all__.
        tree = ast.parse(Path(module.filepath).read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
            ):
                return list(ast.literal_eval(node.value))
        return []


def test_every_public_name_of_every_public_module_is_in_the_reference() -> None:
    rendered = "\n".join(page.markdown for page in reference.pages())
    modules = api.public_modules()
    assert {m.path.split(".")[1] for m in modules} == set(api.PACKAGES)
    for module in modules:
        names = _runtime_all(module)
        assert names == [entry.name for entry in api.entries(module)], module.path
        assert reference.uri(module) in {page.uri for page in reference.pages()}
        for entry in api.entries(module):
            if entry.defined_here:
                assert re.search(rf"^::: {re.escape(entry.target)}$", rendered, re.M), entry
            else:
                assert f"| [`{entry.name}`][{entry.target}] |" in rendered or (
                    entry.external and f"| `{entry.name}` |" in rendered
                ), entry


def test_the_reference_navigation_lists_every_reference_page_once() -> None:
    def uris(item: object) -> list[str]:
        if isinstance(item, str):
            return [item]
        if isinstance(item, dict):
            return [u for value in item.values() for u in uris(value)]
        return [u for value in item for u in uris(value)]  # type: ignore[attr-defined]

    listed = uris(reference.nav())
    assert sorted(listed) == sorted(page.uri for page in reference.pages())


def test_the_catalogue_lists_every_registered_transform_and_preset() -> None:
    from flows.core.plugins import list_presets, list_transforms

    transforms, presets = catalogue.transforms(), catalogue.presets()
    for provided in list_transforms():
        spec = provided.spec
        assert f"### `{spec.name}` {{#transform-{spec.name}}}" in transforms
        assert (
            f"| [`{spec.name}`](#transform-{spec.name}) | {provided.distribution} " in transforms
        )
        for key in spec.defaults:
            assert f"| `{key}` | `{spec.defaults[key]!r}` |" in transforms
    for provided in list_presets():
        assert f"### `{provided.spec.name}` {{#preset-{provided.spec.name}}}" in presets
    assert "| `features` | required | `int` |" in presets


def test_the_cli_reference_has_every_command_and_option() -> None:
    import argparse

    from flows.cli.main import build_parser

    text = clidoc.reference()
    commands = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    for name, parser in commands.choices.items():
        assert f"## `flows {name}` {{#flows-{name}}}" in text
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in text, (name, option)
    assert "rows per optimizer step (default: 256)" in text


def test_benchmark_tables_show_the_numbers_of_the_json() -> None:
    data = json.loads((bench.DATA / "bench.json").read_text())
    speed = bench.speed_tables()
    for row in data["rows"]:
        assert f"| {row['label']} | {row['op']} | {row['ms']['floor']:.2f} |" in speed
    quality = bench.quality_table()
    for entry in json.loads((bench.DATA / "quality.json").read_text())["summary"]:
        assert f"| {entry['dataset']} | {entry['flow']} | {entry['ours']:.4f} |" in quality
    presets = bench.presets_table()
    for row in json.loads((bench.DATA / "presets.json").read_text())["rows"]:
        assert f"| {row['dataset']} | {row['preset']} | {row['kl']:.3f} |" in presets
    runs = json.loads((bench.DATA / "runs.json").read_text())
    assert sorted(runs) == ["bench.json", "presets.json", "quality.json"]
