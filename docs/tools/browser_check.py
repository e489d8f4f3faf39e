"""The built site as a browser shows it: screenshots, and no raw markup left in any page.

Serves ``build/site`` on a free port of 127.0.0.1, takes full-width screenshots of a few pages
with headless Chromium (Debian's ``chromium`` package), and fails if any page, as built or as
the browser renders it (scripts run), still shows a raw Sphinx role (``:class:``), a
``.. math::`` directive, unrendered ``$...$`` math, an image that is not there, or anything
fetched from the network.

    python docs/tools/browser_check.py --site build/site --out build/screenshots
"""

from __future__ import annotations

import argparse
import http.server
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hooks"))

from flowsdoc import checks

# The pages shot: the home page, one tutorial, one API page (with math and cross-references).
PAGES = {
    "home": "index.html",
    "tutorial": "tutorials/first-flow.html",
    "api": "reference/core/distributions/flow.html",
}
_IMAGE = re.compile(r'<img[^>]+src="(?P<src>[^"]+)"')


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("browser_check: no chromium found; install it with: apt-get install -y chromium")


def _serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(site), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}"


def _browser(chromium: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # the checks run as root in CI containers
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--virtual-time-budget=4000",  # let the page's scripts run before the capture
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _missing_images(site: Path, page: Path, html: str) -> list[str]:
    missing = []
    for match in _IMAGE.finditer(html):
        src = match.group("src")
        if src.startswith(("http:", "https:", "data:")):
            continue
        if not (page.parent / src.split("#")[0]).resolve().is_file():
            missing.append(f"image {src!r} is missing")
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, default=Path("build/site"))
    parser.add_argument("--out", type=Path, default=Path("build/screenshots"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args(argv)
    chromium = _chromium()
    site = args.site.resolve()
    args.out.mkdir(parents=True, exist_ok=True)

    problems: list[str] = []
    pages = sorted(site.rglob("*.html"))
    for page in pages:
        html = page.read_text()
        found = checks.leftovers(html) + checks.remote_resources(html)
        for problem in found + _missing_images(site, page, html):
            problems.append(f"{page.relative_to(site)}: {problem}")

    server, base = _serve(site)
    try:
        for name, path in PAGES.items():
            url = f"{base}/{path}"
            shot = (args.out / f"{name}.png").resolve()
            done = _browser(
                chromium, f"--window-size={args.width},{args.height}", f"--screenshot={shot}", url
            )
            if not shot.is_file():
                problems.append(f"{path}: no screenshot ({done.stderr.strip()[-300:]})")
                continue
            dom = _browser(chromium, "--dump-dom", url).stdout
            if "<math" not in dom and name == "api":
                problems.append(f"{path}: the browser shows no MathML")
            problems += [f"{path} (in the browser): {p}" for p in checks.leftovers(dom)]
            print(f"{name:<9} {url} -> {shot}")
    finally:
        server.shutdown()

    print(
        f"checked {len(pages)} pages for raw roles, unrendered math, missing images and "
        "resources fetched from the network"
    )
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
