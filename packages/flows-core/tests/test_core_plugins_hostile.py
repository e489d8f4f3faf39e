"""The registry against hostile or broken plugins and distributions: none of them takes it down,
none is reported ``ok`` when it failed, none takes another's place."""

from __future__ import annotations

import importlib
import importlib.metadata
import itertools
import textwrap
import warnings

import pytest

from flows.core import plugins
from flows.core.plugins import FlowsPluginWarning, RegistryError
from flows.core.plugins import hookimpl as flows_hookimpl

SHIFT_MODULE = """
    from flows.core.plugins import TransformSpec, hookimpl

    @hookimpl
    def flows_register_transforms():
        return [TransformSpec("{name}", "flows.core.transforms:AdditiveTransform",
                              shapes=lambda: [()], summary="third-party shift")]
"""


# Hook modules get names never used before: an imported module stays in sys.modules.
_MODULES = itertools.count()


class FakeDistribution(importlib.metadata.Distribution):
    """An installed distribution, from the texts of its metadata files, without installing it."""

    def __init__(self, name: str | None, version: str, entry_points: str | None) -> None:
        metadata = "Metadata-Version: 2.1\n"
        if name is not None:
            metadata += f"Name: {name}\nVersion: {version}\n"
        self._files = {"METADATA": metadata, "entry_points.txt": entry_points}

    def read_text(self, filename: str) -> str | None:
        return self._files.get(filename)

    def locate_file(self, path):  # pragma: no cover - never asked for files here
        raise FileNotFoundError(path)


class RaisingDistribution(FakeDistribution):
    """A distribution whose entry points cannot be read at all."""

    def __init__(self, name: str, error: BaseException) -> None:
        super().__init__(name, "9.9", None)
        self.error = error

    def read_text(self, filename: str) -> str | None:
        if filename == "entry_points.txt":
            raise self.error
        return super().read_text(filename)


@pytest.fixture
def installed(monkeypatch, tmp_path):
    """Fake installed distributions, and only those (so nothing depends on what is installed).

    ``install(dist, version, {entry point: source})`` writes each hook module to a temporary
    folder on ``sys.path`` and returns their names; ``install(dist, version, text=...)`` gives
    the raw entry_points.txt.
    """
    monkeypatch.syspath_prepend(str(tmp_path))
    fakes: list[importlib.metadata.Distribution] = []
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: list(fakes))
    monkeypatch.delenv("FLOWS_DISABLE_PLUGIN_AUTOLOAD", raising=False)

    def install(
        dist: str | None,
        version: str = "1.0",
        modules: dict[str, str] | None = None,
        text: str | None = None,
    ) -> dict[str, str]:
        lines, names = ["[flows]"], {}
        for entry_point, source in (modules or {}).items():
            module = f"flows_test_hostile_{next(_MODULES)}_{entry_point.replace('-', '_')}"
            (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
            lines.append(f"{entry_point} = {module}")
            names[entry_point] = module
        fakes.append(FakeDistribution(dist, version, text or "\n".join(lines) + "\n"))
        plugins.reset()
        return names

    install.fakes = fakes  # type: ignore[attr-defined]
    plugins.reset()
    yield install
    plugins.reset()


def report() -> dict[tuple[str, str], plugins.PluginInfo]:
    return {(info.name, info.distribution): info for info in plugins.plugin_report()}


def transform_names() -> set[str]:
    return {p.spec.name for p in plugins.list_transforms()}


def warning_texts(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, FlowsPluginWarning)]


# 1. sys.exit and other BaseExceptions


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        ("import sys; sys.exit(3)", "SystemExit: 3"),
        ("raise SystemExit", "SystemExit"),
        ("raise GeneratorExit('odd')", "GeneratorExit: odd"),
        ("class Odd(BaseException): pass\nraise Odd('very odd')", "Odd: very odd"),
    ],
)
def test_a_plugin_exiting_at_import_is_skipped_and_named(installed, statement, error):
    installed("flows-good", "1.0", {"good": SHIFT_MODULE.format(name="good-shift")})
    installed("flows-exiter", "0.3", {"exiter": statement + "\n"})
    with pytest.warns(FlowsPluginWarning) as caught:
        names = transform_names()
    assert {"good-shift", "affine"} <= names
    assert warning_texts(caught) == [
        f"flows plugin 'exiter' from flows-exiter 0.3 failed and was skipped: {error}"
    ]
    info = report()["exiter", "flows-exiter"]
    assert (info.status, info.error, info.version) == ("failed", error, "0.3")
    assert report()["good", "flows-good"].status == "ok"


@pytest.mark.parametrize("hook", ["flows_register_transforms", "flows_register_presets"])
def test_a_hook_calling_sys_exit_is_skipped_and_named(installed, hook):
    exiting = f"""
        import sys
        from flows.core.plugins import hookimpl

        @hookimpl
        def {hook}():
            sys.exit("leaving")
    """
    installed("flows-good", "1.0", {"good": SHIFT_MODULE.format(name="good-shift")})
    installed("flows-exiter", "0.3", {"exiter": exiting})
    with pytest.warns(FlowsPluginWarning, match=f"'exiter' from flows-exiter 0.3.*{hook}"):
        assert "good-shift" in transform_names()
        assert "maf" in {p.spec.name for p in plugins.list_presets()}
    info = report()["exiter", "flows-exiter"]
    assert info.status == "failed"
    assert info.error == f"{hook} raised SystemExit: leaving"
    assert info.hooks == (hook,)


def test_keyboard_interrupt_is_not_swallowed(installed):
    installed("flows-interrupt", "1.0", {"interrupt": "raise KeyboardInterrupt\n"})
    with pytest.raises(KeyboardInterrupt):
        plugins.list_transforms()
    # nothing half-built stays behind: the next lookup discovers again
    installed.fakes.clear()
    plugins.reset()
    assert "affine" in transform_names()


def test_a_plugin_with_an_unprintable_error_and_a_huge_message(installed):
    hostile = """
        class Hostile(Exception):
            def __str__(self):
                raise SystemExit("not even the message")

        raise Hostile()
    """
    installed("flows-hostile", "1.0", {"hostile": hostile})
    installed("flows-verbose", "1.0", {"verbose": "raise ValueError('line\\n' * 1000)\n"})
    with pytest.warns(FlowsPluginWarning):
        assert "affine" in transform_names()
    assert report()["hostile", "flows-hostile"].error == "Hostile: (message unprintable)"
    verbose = report()["verbose", "flows-verbose"].error
    assert verbose == "ValueError: " + " ".join(["line"] * 1000)[:297] + "..."


def test_a_plugin_object_whose_attributes_raise(installed):
    class Hostile:
        def __dir__(self):
            raise SystemExit(4)

    plugin = Hostile()
    plugins.register(plugin, "hostile")
    try:
        with pytest.warns(FlowsPluginWarning, match="'hostile' from <registered>.*SystemExit: 4"):
            assert "affine" in transform_names()
        info = {i.name: i for i in plugins.plugin_report()}["hostile"]
        assert (info.status, info.error) == ("failed", "SystemExit: 4")
    finally:
        plugins.unregister(plugin)
    assert "hostile" not in {i.name for i in plugins.plugin_report()}


# 2. distributions whose entry points cannot be read


def test_a_malformed_entry_points_txt_in_an_unrelated_distribution(installed):
    installed("flows-good", "1.0", {"good": SHIFT_MODULE.format(name="good-shift")})
    installed("unrelated", "2.0", text="[console_scripts]\nok = a:b\nthis line is broken\n")
    with pytest.warns(FlowsPluginWarning) as caught:
        assert plugins.transform_spec("good-shift").distribution == "flows-good"
    reason = "malformed entry_points.txt, line 3: 'this line is broken' is not 'name = value'"
    assert warning_texts(caught) == [f"unrelated 2.0 failed and was skipped: {reason}"]
    info = report()["", "unrelated"]
    assert (info.status, info.error, info.hooks) == ("failed", reason, ())
    assert report()["good", "flows-good"].status == "ok"


def test_a_malformed_flows_section_fails_only_that_distribution(installed):
    installed("flows-good", "1.0", {"good": SHIFT_MODULE.format(name="good-shift")})
    installed("flows-typo", "0.1", text="[flows]\ntypo flows_typo.plugin\n")
    with pytest.warns(FlowsPluginWarning, match=r"flows-typo 0\.1 failed.*line 2: 'typo flows"):
        assert "good-shift" in transform_names()


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "UnicodeDecodeError"),
        (PermissionError("denied"), "PermissionError: denied"),
        (SystemExit(2), "SystemExit: 2"),
    ],
)
def test_an_unreadable_entry_points_txt_fails_only_that_distribution(installed, error, reason):
    installed("flows-good", "1.0", {"good": SHIFT_MODULE.format(name="good-shift")})
    installed.fakes.insert(0, RaisingDistribution("unreadable", error))
    with pytest.warns(FlowsPluginWarning, match="unreadable 9.9 failed"):
        assert "good-shift" in transform_names()
    info = report()["", "unreadable"]
    assert info.status == "failed"
    assert info.error.startswith(f"cannot read entry_points.txt: {reason}")


def test_a_distribution_without_a_name_is_still_told_apart(installed):
    installed(None, modules={"anonymous": SHIFT_MODULE.format(name="anonymous-shift")})
    provided = plugins.transform_spec("anonymous-shift")
    assert (provided.distribution, provided.version) == ("?", "")


# 3. the report tells the truth


def test_the_report_calls_the_hooks_first(installed):
    raising = """
        from flows.core.plugins import hookimpl

        @hookimpl
        def flows_register_presets():
            raise ValueError("bad spec")
    """
    installed("flows-raising", "0.2", {"raising": raising})
    with pytest.warns(FlowsPluginWarning, match="flows_register_presets raised ValueError"):
        info = report()["raising", "flows-raising"]  # before any listing
    assert info.status == "failed"
    assert info.error == "flows_register_presets raised ValueError: bad spec"
    assert report()["core", "flows-core"].status == "ok"


GARBAGE = [
    ("3", "flows_register_transforms returned 3, not a list of TransformSpec"),
    ("'rqs'", "flows_register_transforms returned 'rqs', not a list of TransformSpec"),
    ("{'a': 1}", "flows_register_transforms returned {'a': 1}, not a list of TransformSpec"),
    ("[None]", "flows_register_transforms returned None, not a TransformSpec"),
    (
        "[PresetSpec('p', 'm:o', 'a preset')]",
        "flows_register_transforms returned PresetSpec(name='p', constructor='m:o', "
        "summary='a preset', transforms=()), not a TransformSpec",
    ),
    ("[spec('twice'), spec('twice')]", "flows_register_transforms returned 'twice' twice"),
]


@pytest.mark.parametrize(("value", "error"), GARBAGE)
def test_a_hook_returning_garbage_is_failed_everywhere(installed, value, error):
    garbage = f"""
        from flows.core.plugins import PresetSpec, TransformSpec, hookimpl

        def spec(name):
            return TransformSpec(name, "flows.core.transforms:AdditiveTransform",
                                 shapes=lambda: [()], summary="s")

        @hookimpl
        def flows_register_presets():
            return [PresetSpec("garbage-preset", "flows.core.presets:MAF", "fine on its own")]

        @hookimpl
        def flows_register_transforms():
            return {value}
    """
    installed("flows-garbage", "0.1", {"garbage": garbage})
    with pytest.warns(FlowsPluginWarning, match="'garbage' from flows-garbage 0.1"):
        info = report()["garbage", "flows-garbage"]
    assert (info.status, info.error) == ("failed", error)
    # a plugin that failed in one hook contributes to none
    assert "garbage-preset" not in {p.spec.name for p in plugins.list_presets()}
    assert "twice" not in transform_names()


def test_a_hook_may_return_nothing_or_a_generator(installed):
    lazy = """
        from flows.core.plugins import TransformSpec, hookimpl

        @hookimpl
        def flows_register_transforms():
            yield TransformSpec("lazy-shift", "flows.core.transforms:AdditiveTransform",
                                shapes=lambda: [()], summary="s")

        @hookimpl
        def flows_register_presets():
            return None
    """
    installed("flows-lazy", "1.0", {"lazy": lazy})
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlowsPluginWarning)
        assert "lazy-shift" in transform_names()
        assert report()["lazy", "flows-lazy"].status == "ok"


# 4. entry-point names taken twice


def test_a_third_party_cannot_take_a_first_party_plugin_name(installed):
    # listed first, as a folder early on sys.path would be
    installed("aaa-evil", "6.6", {"splines": SHIFT_MODULE.format(name="rqs")})
    installed("flows-splines", "0.1.0", {"splines": SHIFT_MODULE.format(name="rqs")})
    with pytest.warns(FlowsPluginWarning) as caught:
        provided = plugins.transform_spec("rqs")
    assert (provided.distribution, provided.plugin) == ("flows-splines", "splines")
    message = "its name 'splines' is already taken by flows-splines 0.1.0 (uninstall one of them)"
    assert warning_texts(caught) == [
        f"flows plugin 'splines' from aaa-evil 6.6 failed and was skipped: {message}"
    ]
    assert report()["splines", "flows-splines"].status == "ok"
    evil = report()["splines", "aaa-evil"]
    assert (evil.status, evil.error) == ("failed", message)


def test_between_third_parties_the_first_keeps_the_name(installed):
    installed("first-dist", "1.0", {"shared": SHIFT_MODULE.format(name="first-shift")})
    installed("second-dist", "2.0", {"shared": SHIFT_MODULE.format(name="second-shift")})
    with pytest.warns(FlowsPluginWarning, match="'shared' from second-dist 2.0.*first-dist 1.0"):
        names = transform_names()
    assert "first-shift" in names and "second-shift" not in names
    assert report()["shared", "second-dist"].status == "failed"


def test_no_distribution_can_take_the_name_core(installed):
    installed("flows-fake-core", "1.0", {"core": SHIFT_MODULE.format(name="fake-shift")})
    with pytest.warns(FlowsPluginWarning, match="'core' is already taken by flows-core"):
        assert "fake-shift" not in transform_names()
    assert report()["core", "flows-core"].status == "ok"


def test_the_same_distribution_twice_on_sys_path_is_no_collision(installed):
    installed("flows-twice", "1.0", {"twice": SHIFT_MODULE.format(name="twice-shift")})
    installed.fakes.append(installed.fakes[0])  # a second copy of the same folder
    installed.fakes.append(FakeDistribution("Flows_Twice", "0.9", "[flows]\ntwice = nowhere\n"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlowsPluginWarning)
        assert plugins.transform_spec("twice-shift").version == "1.0"
        assert [i.distribution for i in plugins.plugin_report()] == ["flows-core", "flows-twice"]


def test_a_registered_plugin_cannot_take_an_installed_name(installed):
    installed("flows-fake", "1.0", {"fake": SHIFT_MODULE.format(name="fake-shift")})

    class Impostor:
        @flows_hookimpl
        def flows_register_transforms(self):
            return []

    impostor = Impostor()
    assert "fake-shift" in transform_names()
    with pytest.warns(FlowsPluginWarning, match="'fake' is already taken by flows-fake 1.0"):
        plugins.register(impostor, "fake")
    try:
        assert report()["fake", "flows-fake"].status == "ok"
        assert report()["fake", "<registered>"].status == "failed"
        assert "fake-shift" in transform_names()
    finally:
        plugins.unregister(impostor)
    assert ("fake", "<registered>") not in report()
    assert report()["fake", "flows-fake"].status == "ok"


def test_registering_an_installed_plugin_again_leaves_it_alone(installed):
    names = installed("flows-fake", "1.0", {"fake": SHIFT_MODULE.format(name="fake-shift")})
    module = importlib.import_module(names["fake"])
    assert "fake-shift" in transform_names()
    with pytest.warns(FlowsPluginWarning, match="already registered under a different name"):
        plugins.register(module, "again")
    try:
        assert plugins.transform_spec("fake-shift").distribution == "flows-fake"
        assert report()["again", "<registered>"].status == "failed"
    finally:
        plugins.unregister(module)
    assert plugins.transform_spec("fake-shift").distribution == "flows-fake"
    assert report()["fake", "flows-fake"].status == "ok"
    assert ("again", "<registered>") not in report()


def test_a_name_provided_twice_is_still_an_error_naming_both(installed):
    installed("shift-one", "1.0", {"one": SHIFT_MODULE.format(name="shift")})
    installed("shift-two", "2.5", {"two": SHIFT_MODULE.format(name="shift")})
    with pytest.raises(RegistryError, match=r"both shift-one 1\.0 \(one\) and shift-two 2\.5"):
        plugins.transform_spec("shift")
    assert [p.distribution for p in plugins.list_transforms() if p.spec.name == "shift"] == [
        "shift-one",
        "shift-two",
    ]


# 5. FLOWS_DISABLE_PLUGIN_AUTOLOAD


@pytest.mark.parametrize(
    ("value", "autoload"),
    [
        ("", True),
        ("0", True),
        ("false", True),
        ("False", True),
        ("no", True),
        ("off", True),
        (" 0 ", True),
        ("1", False),
        ("true", False),
        ("TRUE", False),
        ("yes", False),
        ("on", False),
    ],
)
def test_autoload_setting(installed, monkeypatch, value, autoload):
    installed("flows-fake", "1.0", {"fake": SHIFT_MODULE.format(name="fake-shift")})
    monkeypatch.setenv("FLOWS_DISABLE_PLUGIN_AUTOLOAD", value)
    plugins.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlowsPluginWarning)
        assert ("fake-shift" in transform_names()) is autoload
        assert "affine" in transform_names()


def test_an_unknown_autoload_setting_disables_with_a_warning(installed, monkeypatch):
    installed("flows-fake", "1.0", {"fake": SHIFT_MODULE.format(name="fake-shift")})
    monkeypatch.setenv("FLOWS_DISABLE_PLUGIN_AUTOLOAD", "maybe")
    plugins.reset()
    with pytest.warns(FlowsPluginWarning) as caught:
        assert "fake-shift" not in transform_names()
    assert warning_texts(caught) == [
        "FLOWS_DISABLE_PLUGIN_AUTOLOAD='maybe' is neither 1, true, yes, on nor 0, false, no, "
        "off; plugin autoload is disabled"
    ]


def test_specs_of_a_failed_plugin_are_never_half_listed(installed):
    # The presets hook works, the transforms hook does not: asking for presets first must not
    # list the preset of a plugin that the transforms hook then marks failed.
    half = """
        from flows.core.plugins import PresetSpec, hookimpl

        @hookimpl
        def flows_register_presets():
            return [PresetSpec("half-preset", "flows.core.presets:MAF", "half")]

        @hookimpl
        def flows_register_transforms():
            raise RuntimeError("broken half")
    """
    installed("flows-half", "1.0", {"half": half})
    with pytest.warns(FlowsPluginWarning, match="broken half"):
        presets = {p.spec.name for p in plugins.list_presets()}
    assert "half-preset" not in presets and "maf" in presets
    with pytest.raises(RegistryError, match="unknown preset 'half-preset'"):
        plugins.preset_spec("half-preset")
