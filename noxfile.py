"""Sessions for the flows monorepo.

Each ``tests(<package>)`` session installs one package and only the flows packages it declares
(real, non-editable installs), so a missing dependency fails there first; there, only tests
marked ``together`` may skip, those that need more than the package's closure. ``all`` installs
every package and extra (editable) and runs those tests and the docstring examples.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import nox
import tomllib

# The sessions' Pythons cache the bytecode of what they import. Where PYTHONDONTWRITEBYTECODE is
# set (our CI machines set it), every process a suite starts (each pytest worker, each `flows`
# command a test runs) compiled torch's modules anew, about 1.7 s a process (measured: the CLI
# suite 84 s -> 55 s). The environments are throwaway, and installs skip compiling (below).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

ROOT = pathlib.Path(__file__).parent
PACKAGES = ROOT / "packages"
# Every install is pinned by the constraints, and skips byte-compiling what it installs: torch
# alone holds thousands of modules, and a session imports few of them (measured: 16 s -> 7 s).
CONSTRAINTS = ("--no-compile", "-c", "requirements/constraints.txt")
TEST_REQUIREMENTS = ("-r", "requirements/test.txt")
# requirements/test.txt without its torch pin, for the sessions that choose their own torch.
UNPINNED_TEST_TOOLS = tuple(
    line
    for line in (ROOT / "requirements" / "test.txt").read_text().splitlines()
    if line and not line.startswith(("#", "-"))
)
# The suites run on every core (pytest-xdist), each worker on one torch thread: small flows
# train fastest on one thread, and workers with more threads than cores would thrash.
PARALLEL = ("-n", "auto")
ONE_THREAD = {"OMP_NUM_THREADS": "1"}

# The flows packages each package needs, itself included: its declared closure.
CLOSURE = {
    "nn": ["nn"],
    "core": ["nn", "core"],
    "splines": ["nn", "core", "splines"],
    "ode": ["nn", "core", "ode"],
    "pyro": ["nn", "core", "pyro"],
    "sbi": ["nn", "core", "sbi"],
    "image": ["nn", "core", "image"],
    "cli": ["nn", "core", "cli"],
}

# Flows packages a suite also installs beyond its closure: flows-sbi's default model, "nsf", is
# flows-splines'; flows-image's command-line tests run `flows fit digits --flow glow`.
TEST_EXTRAS = {"sbi": ["splines"], "image": ["cli"]}

# The optional extras a session installs with a package, where that session needs them.
PLOT = {"cli": "plot"}  # matplotlib: the command's pictures
TESTED_EXTRAS = {**PLOT, "image": "digits"}  # and scikit-learn's digits
EVERY_EXTRA = {**TESTED_EXTRAS, "core": "export"}  # and onnx, onnxruntime: the ONNX export

nox.options.sessions = ["lint", "types", "versions", "tests", "plugins", "all", "docs"]
nox.options.reuse_existing_virtualenvs = False
# Two sessions at a time, each its own nox process with its output printed when it ends: pip,
# mypy and mkdocs keep one core busy, so a second session fills the other (the suites' own
# workers share the cores meanwhile). `nox -j 1` runs them one after another.
nox.options.parallel = 2
nox.options.allow_parallel = True


def _paths(
    names: list[str], editable: bool = False, extras: dict[str, str] | None = None
) -> list[str]:
    """The local packages' paths for pip, each with its extra from ``extras`` if it has one."""
    extras = extras or {}
    paths = [
        str(PACKAGES / f"flows-{name}") + (f"[{extras[name]}]" if name in extras else "")
        for name in names
    ]
    if editable:
        return [arg for path in paths for arg in ("-e", path)]
    return paths


# What the local packages build with (their pyproject.toml's build-system.requires, and what
# hatchling asks for an editable build), installed once per session: pip's default builds each
# package in a fresh environment of its own, installing the backend every time (measured:
# 9.6 s -> 2.0 s for three packages).
BUILD_REQUIREMENTS = sorted(
    {
        requirement
        for path in [
            *PACKAGES.glob("flows-*/pyproject.toml"),
            *ROOT.glob("examples/*/pyproject.toml"),
        ]
        for requirement in tomllib.loads(path.read_text())["build-system"]["requires"]
    }
    | {"editables~=0.3"}
)


def _install(session: nox.Session, *args: str, constrained: bool = True) -> None:
    """``pip install`` under the constraints, the local packages built without isolation.

    ``constrained=False`` leaves out the constraints file, for the sessions that install a
    torch other than its pin.
    """
    constraints = CONSTRAINTS if constrained else ("--no-compile",)
    session.install(*constraints, *BUILD_REQUIREMENTS)
    session.install(*constraints, "--no-build-isolation", *args)


def _require_installed(session: nox.Session, expected: set[str]) -> None:
    """Fail unless exactly the ``expected`` flows distributions are installed."""
    installed = {
        dist["name"]
        for dist in json.loads(session.run("pip", "list", "--format=json", silent=True))
        if dist["name"].startswith("flows-")
    }
    if installed != expected:
        session.error(f"installed {sorted(installed)}, expected exactly {sorted(expected)}")


@nox.session
@nox.parametrize("package", list(CLOSURE), ids=list(CLOSURE))
def tests(session: nox.Session, package: str) -> None:
    """Run one package's tests with only that package and its declared closure installed."""
    extras = TEST_EXTRAS.get(package, [])
    # The optional extras are part of what a package declares, so its tests use them.
    paths = _paths(CLOSURE[package] + extras, extras=TESTED_EXTRAS)
    # One pip call for every local package: the exact sibling pins are not on any index.
    _install(session, *TEST_REQUIREMENTS, *paths)
    _require_installed(session, {f"flows-{name}" for name in CLOSURE[package] + extras})
    session.run(
        "pytest",
        *PARALLEL,
        f"packages/flows-{package}/tests",
        *session.posargs,
        env={"FLOWS_SKIPS": "together", **ONE_THREAD},
    )


@nox.session
@nox.parametrize("step", ["core", "splines", "example"], ids=["core", "splines", "example"])
def plugins(session: nox.Session, step: str) -> None:
    """Real installs: transforms and presets appear exactly when their package is installed.

    Each step is its own fresh environment, so nothing an earlier step installed is listed.
    """
    example = "examples/flows-example-plugin"
    packages = ["nn", "core", "splines", "cli"] if step == "splines" else ["nn", "core", "cli"]
    expected = {f"flows-{name}" for name in packages}
    if step == "core":
        _install(session, *_paths(packages))
        checks = ["--absent", "rqs", "--absent-preset", "nsf"]
    elif step == "splines":
        _install(session, *_paths(packages))
        checks = ["--present", "rqs", "--present-preset", "nsf"]
        checks += ["--distribution", "rqs=flows-splines"]
    else:
        _install(session, *TEST_REQUIREMENTS, *_paths(packages), example)
        expected.add("flows-example-plugin")
        checks = ["--present", "sinh-arcsinh", "--absent", "rqs", "--absent-preset", "nsf"]
        checks += ["--distribution", "sinh-arcsinh=flows-example-plugin"]
    _require_installed(session, expected)
    # --clean: every listing exits 0 with nothing on stderr, and every plugin loaded.
    session.run("python", "tools/check_plugins.py", "--clean", *checks)
    if step == "example":
        session.run("pytest", f"{example}/tests")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: formatting and lint."""
    session.install("ruff>=0.6")
    session.run("ruff", "format", "--check", ".")
    session.run("ruff", "check", ".")


@nox.session
def types(session: nox.Session) -> None:
    """mypy over every package's sources: strict for flows-nn and the plugin registry.

    The configuration is pyproject.toml's ``[tool.mypy]``: mypy reads the sources from
    packages/ and checks the bodies of unannotated functions everywhere; the installs bring
    the dependencies whose annotations it checks against.
    """
    # matplotlib's annotations, for the plots of flows-cli
    paths = _paths(list(CLOSURE), editable=True, extras=PLOT)
    _install(session, "-r", "requirements/types.txt", *paths)
    session.run("mypy", *session.posargs)


@nox.session(venv_backend="none")
def versions(session: nox.Session) -> None:
    """Every package carries the same version and pins its siblings exactly; every package
    has its isolated test session and is in a development environment (dev.txt, or
    integrations.txt for the two that install sbi and pyro-ppl)."""
    found = {}
    for pyproject in sorted(PACKAGES.glob("flows-*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        found[project["name"]] = project["version"]
    if len(set(found.values())) != 1:
        session.error(f"versions differ: {found}")
    version = next(iter(found.values()))
    for pyproject in sorted(PACKAGES.glob("flows-*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        for requirement in project.get("dependencies", []):
            name = requirement.split("=")[0].split(">")[0].split("<")[0].strip()
            if name in found and requirement != f"{name}=={version}":
                session.error(f"{project['name']}: {requirement!r} must be {name}=={version}")
    folders = sorted(path.parent.name for path in PACKAGES.glob("flows-*/pyproject.toml"))
    missing = [name for name in folders if name.removeprefix("flows-") not in CLOSURE]
    if missing:
        session.error(f"no tests(<name>) session (CLOSURE) for {missing}")
    development = (ROOT / "requirements" / "integrations.txt").read_text()
    development += (ROOT / "requirements" / "dev.txt").read_text()
    missing = [name for name in folders if f"-e packages/{name}" not in development]
    if missing:
        session.error(f"requirements/dev.txt and integrations.txt do not install {missing}")
    session.log(f"all {len(found)} packages at {version}")


@nox.session(name="all")
def all_(session: nox.Session) -> None:
    """Every package editable with every extra: the tests marked ``together``, the docstrings.

    The isolated ``tests(<package>)`` sessions run every other test and skip these, which need
    more than one package's closure (the ONNX export, another flows package); here none may
    skip. Arguments after ``--`` replace ``-m together``: ``nox -s all -- -m ""`` runs every
    suite together.
    """
    paths = _paths(list(CLOSURE), editable=True, extras=EVERY_EXTRA)
    _install(session, *TEST_REQUIREMENTS, *paths)
    selection = session.posargs or ["-m", "together"]
    session.run(
        "pytest", *PARALLEL, "packages", *selection, env={"FLOWS_SKIPS": "none", **ONE_THREAD}
    )
    sources = [str(path) for path in sorted(PACKAGES.glob("flows-*/src/flows"))]
    session.run("pytest", *PARALLEL, "--doctest-modules", *sources, env=ONE_THREAD)


# The torch releases the suites are run on: the first is the floor every pyproject.toml
# declares (torch>=2.13), the last the newest this project has tested.
TORCH_VERSIONS = ["2.13.0", "2.14.1"]


@nox.session(name="tests-torch", default=False)
@nox.parametrize("torch", TORCH_VERSIONS, ids=TORCH_VERSIONS)
def tests_torch(session: nox.Session, torch: str) -> None:
    """Every suite on one torch of the declared range, with the full compile-clean sweep.

    FLOWS_COMPILE_SWEEP=all makes the compile tests trace every registered preset, with and
    without context (the default sessions trace a representative few). The constraints file
    pins the default torch, so this session names its own.
    """
    paths = _paths(list(CLOSURE), extras=TESTED_EXTRAS)
    _install(session, f"torch=={torch}", *UNPINNED_TEST_TOOLS, *paths, constrained=False)
    session.run("python", "-c", f"import torch; assert torch.__version__.startswith({torch!r})")
    suites = [f"packages/flows-{name}/tests" for name in CLOSURE]
    session.run("pytest", *suites, *session.posargs, env={"FLOWS_COMPILE_SWEEP": "all"})


@nox.session(name="tests-cuda", default=False)
def tests_cuda(session: nox.Session) -> None:
    """Every suite with ``--device cuda``, where a GPU exists; where none does, it says so.

    Installs a CUDA build of torch (``FLOWS_CUDA_TORCH``, default ``torch==2.14.1``), so the
    constraints file's CPU pin is not applied. Extra pytest arguments go after ``--``
    (``nox -s tests-cuda -- --dtype float32``).
    """
    if shutil.which("nvidia-smi") is None:
        session.skip("no GPU here (no nvidia-smi): tests-cuda ran nothing")
    paths = _paths(list(CLOSURE), extras=TESTED_EXTRAS)
    wanted = os.environ.get("FLOWS_CUDA_TORCH", "torch==2.14.1")
    _install(session, wanted, *UNPINNED_TEST_TOOLS, *paths, constrained=False)
    available = session.run(
        "python", "-c", "import torch; print(torch.cuda.is_available())", silent=True
    )
    if "True" not in str(available):
        session.skip("no usable GPU here (torch.cuda.is_available() is False): ran nothing")
    suites = [f"packages/flows-{name}/tests" for name in CLOSURE]
    session.run("pytest", *suites, "--device", "cuda", *session.posargs)


@nox.session(default=False)
def fuzz(session: nox.Session) -> None:
    """Bounded fault campaign: damaged and crafted checkpoints, hostile CSV files and commands.

    ``FLOWS_FUZZ_EXAMPLES`` examples per property (default 100); ``FLOWS_FUZZ_SEED`` set
    draws new ones instead of the same ones every run.
    """
    _install(session, *TEST_REQUIREMENTS, *_paths(list(CLOSURE)))
    session.run("pytest", "fuzz", *session.posargs)


@nox.session(default=False)
def dev(session: nox.Session) -> None:
    """A ready .venv: the packages editable but the integrations, test and lint tools.

    ``nox -s dev -- integrations`` adds flows-sbi and flows-pyro (and with them sbi, zuko,
    nflows and pyro-ppl).
    """
    if session.posargs not in ([], ["integrations"]):
        session.error(f"nox -s dev takes no argument or 'integrations', got {session.posargs}")
    requirements = "integrations" if session.posargs else "dev"
    session.run("python", "-m", "venv", ".venv", external=True)
    session.run(
        ".venv/bin/pip", "install", "-r", f"requirements/{requirements}.txt", external=True
    )
    session.log("activate with: . .venv/bin/activate")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Speed side by side with zuko and nflows (competitors installed here only)."""
    _install(
        session,
        *_paths(["nn", "core", "splines", "cli"]),
        "-r",
        "benchmarks/requirements.txt",
    )
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session(name="sbi-bench", default=False)
def sbi_bench(session: nox.Session) -> None:
    """NPE with our NSF against sbi's nsf (nflows) and zuko_nsf: C2ST and times, three tasks."""
    _install(session, *_paths(["nn", "core", "splines", "sbi"]))
    session.run("python", "benchmarks/sbi/run.py", *session.posargs)


@nox.session(default=False)
def quality(session: nox.Session) -> None:
    """Fit quality, KL(p || q) on densities known exactly, side by side with zuko."""
    _install(session, *_paths(["nn", "core", "splines"]), "-r", "benchmarks/requirements.txt")
    session.run("python", "benchmarks/quality.py", *session.posargs)


@nox.session(name="vi-bench", default=False)
def vi_bench(session: nox.Session) -> None:
    """Variational inference side by side with Pyro's autoguides (pyro-ppl by flows-pyro)."""
    _install(session, *_paths(["nn", "core", "splines", "pyro"]))
    session.run("python", "benchmarks/vi.py", *session.posargs)


@nox.session(name="image-bench", default=False)
def image_bench(session: nox.Session) -> None:
    """Glow on the 8x8 digits beside normflows' Glow: held-out bits/dim and step time."""
    paths = _paths(["nn", "core", "image"], extras=TESTED_EXTRAS)
    _install(session, *paths, "normflows")
    session.run("python", "benchmarks/image.py", *session.posargs)


def _install_docs(session: nox.Session) -> None:
    """The site's tools and every package, editable (the reference reads their sources)."""
    # The command's pictures, and the CLI reference of every option.
    paths = _paths(list(CLOSURE), editable=True, extras=PLOT)
    _install(session, "-r", "requirements/docs.txt", *paths)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation: every code block of every page runs, then a strict build.

    The pages' code runs in order, one namespace per page, its printed output checked against
    the page (docs/tests); ``mkdocs build --strict`` then fails on a broken cross-reference, a
    page missing from the navigation, a Sphinx role or a formula left unrendered. The site is
    written to build/site.
    """
    _install_docs(session)
    session.run(
        "pytest",
        *PARALLEL,
        "-p",
        "no:cacheprovider",
        "docs/tests",
        *session.posargs,
        env=ONE_THREAD,
    )
    session.run("mkdocs", "build", "--strict")


@nox.session(name="serve-docs", default=False)
def serve_docs(session: nox.Session) -> None:
    """Preview the site at http://127.0.0.1:8000, rebuilt on every change (mkdocs serve)."""
    _install_docs(session)
    session.run("mkdocs", "serve", *session.posargs)


@nox.session(name="docs-browser", default=False)
def docs_browser(session: nox.Session) -> None:
    """The built site in headless Chromium: screenshots in build/screenshots, no raw markup.

    Needs Debian's chromium: ``apt-get install -y chromium``.
    """
    _install_docs(session)
    session.run("mkdocs", "build", "--strict")
    session.run("python", "docs/tools/browser_check.py", "--out", "build/screenshots")
