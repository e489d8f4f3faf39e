"""The plugin registry: discovery, isolation of failures, duplicates, unknown names."""

from __future__ import annotations

import importlib.metadata
import pathlib
import subprocess
import sys
import textwrap
import warnings

import pytest

from flows.core import plugins
from flows.core.plugins import (
    FlowsPluginWarning,
    PresetSpec,
    RegistryError,
    TransformSpec,
    hookimpl,
)


def _spec(
    name: str, constructor: str = "flows.core.transforms:AdditiveTransform"
) -> TransformSpec:
    return TransformSpec(name, constructor, shapes=lambda: [()], summary=f"{name} test transform")


class FakePlugin:
    """A plugin object, as user code or a test registers it."""

    def __init__(self, *names: str) -> None:
        self.names = names

    @hookimpl
    def flows_register_transforms(self) -> list[TransformSpec]:
        return [_spec(name) for name in self.names]


class FakeDistribution(importlib.metadata.Distribution):
    """An installed distribution declaring ``flows`` entry points, without installing it."""

    def __init__(self, name: str, version: str, entry_points: dict[str, str]) -> None:
        self._files = {
            "METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
            "entry_points.txt": "[flows]\n"
            + "".join(f"{key} = {value}\n" for key, value in entry_points.items()),
        }

    def read_text(self, filename: str) -> str | None:
        return self._files.get(filename)

    def locate_file(self, path):  # pragma: no cover - never asked for files here
        raise FileNotFoundError(path)


@pytest.fixture
def fresh_registry():
    """Rediscover before and after: tests change what is installed or registered."""
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def installed(monkeypatch, tmp_path, fresh_registry):
    """Fake installed distributions whose hook modules are written to a temporary folder."""
    monkeypatch.syspath_prepend(str(tmp_path))
    real = list(importlib.metadata.distributions())
    fakes: list[FakeDistribution] = []
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [*real, *fakes])

    def install(dist: str, version: str, module: str, source: str) -> None:
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        fakes.append(FakeDistribution(dist, version, {module: module}))
        plugins.reset()

    return install


SHIFT_MODULE = """
    from flows.core.plugins import TransformSpec, hookimpl

    @hookimpl
    def flows_register_transforms():
        return [TransformSpec("{name}", "flows.core.transforms:AdditiveTransform",
                              shapes=lambda: [()], summary="third-party shift")]
"""


def test_flows_is_a_namespace_package():
    import flows

    assert flows.__file__ is None
    for folder in flows.__path__:
        assert not (pathlib.Path(folder) / "__init__.py").exists(), folder


def test_import_is_cheap_and_does_no_discovery():
    code = (
        "import sys, flows.core, flows.core.plugins as p\n"
        "from flows.core.plugins import registry\n"
        "print('torch' in sys.modules, registry._REGISTRY.manager is None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_listing_imports_no_torch():
    code = (
        "import sys\nfrom flows.core.plugins import list_transforms, list_presets\n"
        "names = [p.spec.name for p in list_transforms() + list_presets()]\n"
        "print('torch' in sys.modules, 'affine' in names, 'maf' in names)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True"]


def test_builtins_come_from_flows_core_through_the_hooks(fresh_registry):
    provided = plugins.transform_spec("affine")
    assert provided.distribution == "flows-core"
    assert provided.plugin == "core"
    assert plugins.preset_spec("maf").spec.transforms == ("affine",)
    names = {p.spec.name for p in plugins.list_presets()}
    assert {"maf", "nice", "realnvp", "gmm", "gf"} <= names


def test_get_transform_imports_the_constructor(fresh_registry):
    from flows.core.transforms import MonotonicAffineTransform

    assert plugins.get_transform("affine") is MonotonicAffineTransform


def test_get_preset_returns_a_working_constructor(fresh_registry):
    flow = plugins.get_preset("MAF")(features=2, transforms=1)
    assert flow().sample((3,)).shape == (3, 2)


def test_register_and_unregister_a_plugin_object(fresh_registry):
    plugin = FakePlugin("my-shift")
    plugins.register(plugin)
    try:
        provided = plugins.transform_spec("my-shift")
        assert provided.distribution == "<registered>"
        assert provided.spec.summary == "my-shift test transform"
    finally:
        plugins.unregister(plugin)
    with pytest.raises(RegistryError, match="unknown transform 'my-shift'"):
        plugins.transform_spec("my-shift")


def test_register_before_first_lookup_survives_discovery(fresh_registry):
    plugin = FakePlugin("early-shift")
    plugins.register(plugin)
    try:
        assert plugins.transform_spec("early-shift").spec.name == "early-shift"
    finally:
        plugins.unregister(plugin)


def test_duplicate_name_names_both_providers(installed):
    installed("shift-one", "1.0", "flows_test_one", SHIFT_MODULE.format(name="shift"))
    installed("shift-two", "2.5", "flows_test_two", SHIFT_MODULE.format(name="shift"))
    with pytest.raises(RegistryError) as error:
        plugins.transform_spec("shift")
    assert "shift-one 1.0" in str(error.value)
    assert "shift-two 2.5" in str(error.value)
    # other names are unaffected
    assert plugins.transform_spec("affine").distribution == "flows-core"


def test_unknown_first_party_name_says_what_to_install(fresh_registry, monkeypatch):
    monkeypatch.setenv("FLOWS_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins.reset()
    with pytest.raises(RegistryError, match=r"pip install flows-splines") as error:
        plugins.transform_spec("rqs")
    assert "affine" in str(error.value)  # lists what is available
    with pytest.raises(RegistryError, match=r"'nsf' is provided by flows-splines"):
        plugins.get_preset("nsf")
    with pytest.raises(RegistryError, match=r"pip install flows-ode"):
        plugins.get_preset("cnf")


def test_unknown_name_suggests_close_matches(fresh_registry):
    with pytest.raises(RegistryError, match=r"did you mean 'affine'\?"):
        plugins.transform_spec("afine")
    with pytest.raises(TypeError, match="must be a string"):
        plugins.transform_spec(3)  # type: ignore[arg-type]


def test_discovery_through_an_installed_distribution(installed):
    installed("flows-fake", "1.2.3", "flows_test_fake", SHIFT_MODULE.format(name="fake-shift"))
    provided = plugins.transform_spec("fake-shift")
    assert (provided.distribution, provided.version) == ("flows-fake", "1.2.3")
    report = {info.name: info for info in plugins.plugin_report()}
    assert report["flows_test_fake"].status == "ok"
    assert report["flows_test_fake"].hooks == ("flows_register_transforms",)


def test_autoload_can_be_disabled(installed, monkeypatch):
    installed("flows-fake", "1.2.3", "flows_test_fake", SHIFT_MODULE.format(name="fake-shift"))
    monkeypatch.setenv("FLOWS_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins.reset()
    with pytest.raises(RegistryError):
        plugins.transform_spec("fake-shift")
    assert plugins.transform_spec("affine").distribution == "flows-core"


def test_a_plugin_that_fails_to_import_is_reported_and_skipped(installed):
    installed("flows-good", "1.0", "flows_test_good", SHIFT_MODULE.format(name="good-shift"))
    installed("flows-broken", "0.1", "flows_test_broken", "raise RuntimeError('boom')\n")
    with pytest.warns(FlowsPluginWarning, match=r"flows_test_broken.*flows-broken 0\.1.*boom"):
        assert plugins.transform_spec("good-shift").distribution == "flows-good"
    report = {info.name: info for info in plugins.plugin_report()}
    assert report["flows_test_broken"].status == "failed"
    assert "RuntimeError: boom" in report["flows_test_broken"].error
    assert report["flows_test_good"].status == "ok"


def test_a_hook_that_raises_is_reported_and_skipped(installed):
    installed("flows-good", "1.0", "flows_test_good", SHIFT_MODULE.format(name="good-shift"))
    raising = """
        from flows.core.plugins import hookimpl

        @hookimpl
        def flows_register_transforms():
            raise ValueError("bad spec")
    """
    installed("flows-raising", "0.2", "flows_test_raising", raising)
    with pytest.warns(FlowsPluginWarning, match="ValueError: bad spec"):
        names = {p.spec.name for p in plugins.list_transforms()}
    assert {"good-shift", "affine"} <= names
    report = {info.name: info for info in plugins.plugin_report()}
    assert report["flows_test_raising"].status == "failed"


def test_a_hook_returning_the_wrong_type_is_reported(installed):
    wrong = """
        from flows.core.plugins import hookimpl

        @hookimpl
        def flows_register_presets():
            return ["not a spec"]
    """
    installed("flows-wrong", "0.1", "flows_test_wrong", wrong)
    with pytest.warns(FlowsPluginWarning, match="not a PresetSpec"):
        assert "maf" in {p.spec.name for p in plugins.list_presets()}


def test_a_misspelled_hook_fails_loudly(installed):
    misspelled = """
        from flows.core.plugins import hookimpl

        @hookimpl
        def flows_register_transform():
            return []
    """
    installed("flows-typo", "0.1", "flows_test_typo", misspelled)
    with pytest.warns(FlowsPluginWarning, match="unknown hook.*flows_register_transform"):
        report = {info.name: info for info in plugins.plugin_report()}
    assert report["flows_test_typo"].status == "failed"
    assert "flows_register_transforms" in report["flows_test_typo"].error


def test_registering_clears_the_cache(fresh_registry):
    assert "late-shift" not in {p.spec.name for p in plugins.list_transforms()}
    plugin = FakePlugin("late-shift")
    plugins.register(plugin)
    try:
        assert "late-shift" in {p.spec.name for p in plugins.list_transforms()}
    finally:
        plugins.unregister(plugin)
    assert "late-shift" not in {p.spec.name for p in plugins.list_transforms()}


def test_no_warning_when_everything_loads(fresh_registry):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlowsPluginWarning)
        assert plugins.list_transforms()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Bad Name"}, "name must be lower-case"),
        ({"constructor": "no_colon"}, "import path"),
        ({"summary": "two\nlines"}, "one line"),
    ],
)
def test_invalid_spec_fields_are_refused(kwargs, message):
    arguments = {
        "name": "ok",
        "constructor": "flows.core.transforms:AdditiveTransform",
        "shapes": lambda: [()],
        "summary": "ok",
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        TransformSpec(**arguments)
    with pytest.raises(ValueError, match=message):
        PresetSpec(arguments["name"], arguments["constructor"], arguments["summary"])


def test_resolve_binds_hyper_parameters():
    spec = TransformSpec(
        "stepped",
        "flows.core.transforms:MonotonicAffineTransform",
        shapes=lambda bins: [(bins,), (bins - 1,)],
        summary="test",
        shape_defaults={"bins": 4},
        options={"slope": 0.1},
    )
    constructor, shapes = spec.resolve(bins=6)
    assert shapes == [(6,), (5,)]
    assert constructor.keywords == {"slope": 0.1}
    constructor, _ = spec.resolve(slope=0.5)
    assert constructor.keywords == {"slope": 0.5}
    with pytest.raises(TypeError, match=r"unexpected hyper-parameter\(s\) degree.*bins, slope"):
        spec.resolve(degree=3)


def test_every_public_name_of_flows_core_resolves():
    import flows.core

    assert set(flows.core.__all__) == set(flows.core._EXPORTS)
    for name in flows.core.__all__:
        assert getattr(flows.core, name) is not None, name
