"""Helpers to run the real OHIF viewer (its prebuilt ``dist/``) in headless Chromium against SkyPACS.

The viewer is served from its own origin by a small static server on a thread, with an
``app-config.js`` that is the README's OHIF configuration (section "OHIF") pointed at the DICOMweb
root under test: the browser then talks to SkyPACS cross-origin, with preflights, exactly as a
deployment does. Nothing here is downloaded: Chromium is Debian's package, Playwright drives it
through ``executable_path`` (never ``playwright install``), and OHIF comes from ``npm pack @ohif/app``.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Request, Response

CHROMIUM = Path("/usr/bin/chromium")
ENV_OHIF_DIST = "SKYPACS_OHIF_DIST"
DEFAULT_OHIF_DIST = Path.home() / ".cache" / "skypacs" / "ohif-3.13.2" / "dist"
"""Where `.ci/run` unpacks the viewer (`npm pack @ohif/app@3.13.2`)."""
CHROMIUM_ARGS = ["--enable-unsafe-swiftshader", "--use-angle=swiftshader"]
"""No GPU in CI: WebGL, which OHIF's cornerstone3D renders with, runs on SwiftShader. Headless
Chromium 150 picks it by itself; the flags keep it so where Chromium has dropped the automatic fallback
(without WebGL OHIF falls back to its slower CPU rendering, a path this test does not mean to take)."""

APP_CONFIG = """window.config = {
  routerBasename: '/',
  extensions: [], modes: [], showStudyList: true,
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
    sourceName: 'skypacs',
    configuration: {
      friendlyName: 'SkyPACS', name: 'skypacs',
      qidoRoot: '%(root)s', wadoRoot: '%(root)s',
      wadoUriRoot: '%(root)s',
      qidoSupportsIncludeField: true, supportsFuzzyMatching: true, supportsWildcard: true,
      imageRendering: 'wadors', thumbnailRendering: 'wadors', enableStudyLazyLoad: true,
      supportsReject: false, omitQuotationForMultipartRequest: true,
      acceptHeader: ['multipart/related; type=application/octet-stream; transfer-syntax=*'],
      bulkDataURI: { enabled: true },
    },
  }],
  defaultDataSourceName: 'skypacs',
};
"""
"""README "OHIF", character for character but for the DICOMweb root (``http://127.0.0.1:8080/dicom-web``
there). Keep the two identical: this test is what says the README's configuration works."""


MEDIA_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
               ".json": "application/json"}
"""Where the platform's mimetypes may not know them: browsers refuse to compile wasm or run a module
script served as anything else."""


def ohif_dist() -> Path:
    return Path(os.environ.get(ENV_OHIF_DIST) or DEFAULT_OHIF_DIST)


def missing_prerequisite() -> str | None:
    """Why the viewer cannot run here (what to install), or None. Each is a separate install, too slow or
    too large to be assumed: ``.ci/run`` installs them (README "OHIF")."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found: apt-get install -y chromium"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed: pip install playwright (the browser is Debian's chromium)"
    dist = ohif_dist()
    if not (dist / "index.html").is_file():
        return (f"OHIF viewer not found at {dist} (set {ENV_OHIF_DIST}): "
                "npm pack @ohif/app@3.13.2 and unpack it, as .ci/run does")
    return None


def app_config(dicomweb_root: str) -> str:
    return APP_CONFIG % {"root": dicomweb_root}


class _ViewerHandler(http.server.SimpleHTTPRequestHandler):
    """Serves ``dist/`` with the generated ``app-config.js``, and ``index.html`` for any other path that
    is not a file: OHIF is a single-page app whose routes (``/viewer``) exist only in the browser."""

    def guess_type(self, path: str | os.PathLike[str]) -> str:
        return MEDIA_TYPES.get(Path(path).suffix) or super().guess_type(path)

    def __init__(self, *args: Any, viewer: StaticViewer, **kwargs: Any) -> None:
        self.viewer = viewer
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/app-config.js":
            config = app_config(self.viewer.dicomweb_root).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
            self.send_header("Content-Length", str(len(config)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(config)
            return
        if not Path(self.translate_path(path)).is_file():
            self.path = "/index.html"
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a study load fetches a few hundred files."""


@dataclass
class StaticViewer:
    origin: str
    dicomweb_root: str = ""
    """Named in the ``app-config.js`` served: set it before a page loads the viewer. Settable after the
    server starts because SkyPACS needs the viewer's origin (``cors_origins``) before it starts."""


@contextmanager
def static_viewer(dist: Path) -> Iterator[StaticViewer]:
    """Serve the viewer on a loopback ephemeral port, on a thread."""
    viewer = StaticViewer(origin="")
    handler = functools.partial(_ViewerHandler, directory=str(dist), viewer=viewer)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    viewer.origin = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="ohif-static", daemon=True)
    thread.start()
    try:
        yield viewer
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@dataclass
class Traffic:
    """What the page exchanged with SkyPACS: every answer, and the browser's complaints (a blocked CORS
    answer never reaches the page as a response: Chromium says so only on the console)."""

    origin: str
    responses: list[tuple[int, str, str]] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def watch(self, target: BrowserContext | Page) -> None:
        """Listen on a page, or on a context (its pages and their workers)."""
        target.on("response", self._response)
        target.on("requestfailed", self._failed)
        target.on("console", self._console)

    def _response(self, response: Response) -> None:
        if response.url.startswith(self.origin):
            self.responses.append((response.status, response.request.method, response.url))

    def _failed(self, request: Request) -> None:
        # A request the page itself abandons (OHIF cancels prefetches it no longer needs) is no failure
        # of SkyPACS; a CORS refusal or a broken connection is ("net::ERR_FAILED" and the like).
        if request.url.startswith(self.origin) and "ERR_ABORTED" not in (request.failure or ""):
            self.console_errors.append(f"request failed: {request.method} {request.url}: {request.failure}")

    def _console(self, message: ConsoleMessage) -> None:
        text, url = message.text, str((message.location or {}).get("url", ""))
        if message.type == "error" and (self.origin in text or url.startswith(self.origin)
                                        or "CORS" in text or "Access-Control" in text):
            self.console_errors.append(f"{text} ({url})" if url else text)

    def failures(self) -> list[str]:
        return [f"{status} {method} {url}" for status, method, url in self.responses if status >= 400]

    def answered(self, path_part: str) -> list[tuple[int, str, str]]:
        return [item for item in self.responses if path_part in item[2]]


CANVAS_STATS = """() => {
  const stats = [];
  for (const canvas of document.querySelectorAll('.cornerstone-canvas, canvas')) {
    if (!canvas.width || !canvas.height || !canvas.isConnected) continue;
    const copy = document.createElement('canvas');
    copy.width = canvas.width; copy.height = canvas.height;
    const context = copy.getContext('2d');
    context.drawImage(canvas, 0, 0);
    const data = context.getImageData(0, 0, copy.width, copy.height).data;
    let lit = 0, total = 0; const levels = new Set();
    for (let i = 0; i < data.length; i += 4 * 7) {
      total++;
      const value = data[i] + data[i + 1] + data[i + 2];
      if (value > 30) lit++;
      levels.add(value >> 3);
    }
    stats.push({cls: canvas.className, width: canvas.width, height: canvas.height, lit: lit / total,
                levels: levels.size});
  }
  return stats;
}"""
"""Per canvas on the page: the share of sampled pixels that are not black, and how many grey levels
they take: a rendered CT slice lights a good part of the viewport in many levels, a blank or
"loading" viewport does not."""
