"""The real OHIF viewer, in headless Chromium, against ``skypacs serve``: the study list lists what
was stored and a study opens to a rendered image, with the README's OHIF configuration, the viewer on
its own origin, a read token and ``[http] cors_origins``.

``tests/integration/test_ohif_requests.py`` replays OHIF's requests by hand; this runs OHIF itself, so
that a change on either side (OHIF's requests, our answers, CORS) shows here. The token reaches SkyPACS
the two ways a static token can reach it from OHIF, as the README says: added by something in front of
the archive (a reverse proxy; here Playwright adds the header on the wire, outside the page), or by
OHIF itself from the viewer URL's ``token`` parameter, which OHIF then sends as
``Authorization: Bearer``: a header no CORS-safelisted request has, so the browser sends a preflight
first, as it would for a token from an OIDC login.

Needs Debian's chromium, playwright and OHIF's prebuilt viewer, which ``.ci/run`` installs; fails without
them, naming what to install (README "OHIF").
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom
import pytest

from tests.conftest import copy_testdata
from tests.dicom_files import identity
from tests.e2e.ohif import (
    CANVAS_STATS,
    CHROMIUM,
    CHROMIUM_ARGS,
    Traffic,
    missing_prerequisite,
    ohif_dist,
    static_viewer,
)
from tests.integration.test_serve import Server, free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),  # the first test pays for Chromium's and OHIF's cold start
]


@pytest.fixture(scope="module", autouse=True)
def prerequisites() -> None:
    """Chromium, Playwright and the OHIF build are installed by ``.ci/run``: without them this FAILS,
    naming what to install, rather than skipping (a skipped viewer test proves nothing)."""
    missing = missing_prerequisite()
    if missing is not None:
        pytest.fail(f"the OHIF viewer test cannot run: {missing}", pytrace=False)

TOKEN = "ohif-e2e-viewer-token-" + "r" * 20
FILES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm"]  # CT and MR as stored; NM in JPEG 2000
TIMEOUT_MS = 120_000
"""For any one wait in the browser: OHIF's first start on 2 cores without a GPU takes ~20 s."""
QUIET_VIEWER = """
localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));
sessionStorage.setItem('investigationalUseDialog', 'hidden');
"""
"""Keeps OHIF's first-visit tour and notice from covering the screenshot; nothing else depends on it."""


@dataclass(frozen=True)
class Deployment:
    viewer: str
    """The viewer's origin, ``http://127.0.0.1:PORT``."""
    archive: str
    """SkyPACS's origin; the DICOMweb root is ``{archive}/dicom-web``."""
    studies: Mapping[str, pydicom.Dataset]
    """StudyInstanceUID -> the stored file's dataset."""


def _formatted_name(dataset: pydicom.Dataset) -> str:
    """``Family, Given``: how OHIF's study list shows a two-part person name."""
    return ", ".join(part for part in str(dataset.PatientName).split("^") if part)


def _wait_searchable(root: str, count: int, timeout: float = 60) -> None:
    """QIDO lists what ``skypacs serve`` indexed on start. The server answers C-ECHO once its DIMSE
    listener is up; its HTTP listener may open a moment later (the wait on a loaded machine)."""
    request = urllib.request.Request(f"{root}/studies", headers={
        "Authorization": f"Bearer {TOKEN}", "Accept": "application/dicom+json"})
    deadline = time.monotonic() + timeout
    found = 0
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
        except urllib.error.URLError as exc:
            if not isinstance(exc.reason, ConnectionRefusedError):
                raise
            time.sleep(0.1)
            continue
        found = len(json.loads(body)) if body else 0
        if found >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"QIDO lists {found} studies, expected {count}")


def wait_rendered(page: Page, traffic: Traffic, timeout: float = TIMEOUT_MS / 1000) -> list[dict[str, Any]]:
    """Wait until a viewport shows an image (a canvas lit in many grey levels) and return the canvases'
    statistics; fail at once, with what went wrong, if a request to SkyPACS fails on the way."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    rendered = f"() => ({CANVAS_STATS})().some(s => s.lit > 0.05 && s.levels >= 16)"
    deadline = time.monotonic() + timeout
    while True:
        problems = traffic.failures() + traffic.console_errors
        assert not problems, problems
        try:
            page.wait_for_function(rendered, timeout=1000)
            return list(page.evaluate(CANVAS_STATS))
        except PlaywrightTimeout:
            if time.monotonic() > deadline:
                raise AssertionError(f"no image after {timeout:.0f} s; canvases: {page.evaluate(CANVAS_STATS)}; "
                                     f"SkyPACS answered: {traffic.responses}") from None


def _serve(data_dir: Path, log: Path, attempts: int = 3) -> tuple[Server, str]:
    """``skypacs serve`` on a free HTTP port; its origin. A port found free may be taken by another
    process (a test running alongside) before serve binds it: then try another."""
    for _ in range(attempts):
        http_port = free_port()
        server = Server(data_dir, log)
        try:
            server.start("--http-port", str(http_port))
        except AssertionError:
            if "Address already in use" not in log.read_text():
                raise
            log.write_text("")
            continue
        return server, f"http://127.0.0.1:{http_port}"
    raise AssertionError(f"no free port in {attempts} attempts:\n{log.read_text()}")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """``skypacs import`` then ``skypacs serve`` with the README's TOML (a read token for the viewer, the
    viewer's origin in ``cors_origins``), and the viewer served from another port."""
    base = tmp_path_factory.mktemp("ohif-e2e")
    data_dir = base / "data"
    data_dir.mkdir()
    paths = copy_testdata(FILES, base / "in")
    with static_viewer(ohif_dist()) as viewer:
        (data_dir / "skypacs.toml").write_text(
            f'[http]\ncors_origins = ["{viewer.origin}"]\n\n[http.tokens]\n"{TOKEN}" = "read"\n',
            encoding="utf-8")
        imported = subprocess.run(
            [sys.executable, "-m", "skypacs.cli", "import", "--data-dir", str(data_dir), "--no-progress",
             *map(str, paths)], check=False, capture_output=True, text=True, timeout=120)
        assert imported.returncode == 0, imported.stdout + imported.stderr
        server, archive = _serve(data_dir, base / "serve.log")
        try:
            viewer.dicomweb_root = f"{archive}/dicom-web"
            server.wait_instances({identity(path)[2] for path in paths})
            _wait_searchable(viewer.dicomweb_root, len(FILES))
            studies = {str(ds.StudyInstanceUID): ds for ds in map(pydicom.dcmread, paths)}
            yield Deployment(viewer=viewer.origin, archive=archive, studies=studies)
        finally:
            assert server.terminate() == 0, (base / "serve.log").read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh profile per test: no cached preflight, token or service worker carries over."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, service_workers="block")
    context.set_default_timeout(TIMEOUT_MS)
    context.add_init_script(QUIET_VIEWER)
    yield context
    context.close()


def test_without_a_token_the_study_list_is_refused(deployment: Deployment, context: BrowserContext) -> None:
    """The README's configuration alone sends no token: SkyPACS answers 401, readable by the page."""
    traffic = Traffic(deployment.archive)
    traffic.watch(context)
    page = context.new_page()
    with page.expect_response(lambda response: response.url.startswith(f"{deployment.archive}/dicom-web/studies")
                              ) as searched:
        page.goto(f"{deployment.viewer}/")
    assert searched.value.status == 401
    assert searched.value.headers.get("access-control-allow-origin") == deployment.viewer
    assert not [error for error in traffic.console_errors if "CORS" in error or "Access-Control" in error]
    first = next(iter(deployment.studies.values()))
    assert page.get_by_text(_formatted_name(first)).count() == 0


def test_study_list_shows_the_stored_studies(deployment: Deployment, context: BrowserContext,
                                             tmp_path: Path) -> None:
    """As behind a reverse proxy that adds the viewer's token: the header is added outside the page."""
    def add_token(route: Any) -> None:
        route.continue_(headers={**route.request.headers, "authorization": f"Bearer {TOKEN}"})

    context.route(f"{deployment.archive}/**", add_token)
    traffic = Traffic(deployment.archive)
    traffic.watch(context)
    page = context.new_page()
    page.goto(f"{deployment.viewer}/")
    for dataset in deployment.studies.values():
        row = page.locator("tr", has_text=_formatted_name(dataset))
        row.first.wait_for()
        text = row.first.inner_text()
        assert str(dataset.Modality) in text
        if dataset.get("StudyDescription"):
            assert str(dataset.StudyDescription) in text
    page.screenshot(path=str(tmp_path / "ohif-study-list.png"))
    assert traffic.answered("/dicom-web/studies"), "OHIF never searched SkyPACS"
    assert not traffic.failures(), traffic.failures()
    assert not traffic.console_errors, traffic.console_errors


@pytest.mark.parametrize("name", ["CT_small.dcm", "JPEG2000.dcm"])
def test_viewer_renders_a_stored_study(deployment: Deployment, context: BrowserContext, tmp_path: Path,
                                       name: str) -> None:
    """OHIF sends the token itself (``?token=``): preflight, series search, metadata, then the frame as
    stored (JPEG 2000 decoded in the browser), drawn into the viewport."""
    study = next(uid for uid, ds in deployment.studies.items() if ds.filename.endswith(name))
    traffic = Traffic(deployment.archive)
    traffic.watch(context)
    page = context.new_page()
    page.goto(f"{deployment.viewer}/viewer?StudyInstanceUIDs={study}&token={TOKEN}")
    stats = wait_rendered(page, traffic)
    page.screenshot(path=str(tmp_path / f"ohif-viewer-{Path(name).stem}.png"))
    assert "token=" not in page.url  # OHIF takes it out of the address bar (and history)
    assert traffic.answered(f"/studies/{study}/series"), traffic.responses
    assert traffic.answered("/metadata"), traffic.responses
    assert traffic.answered("/frames/1"), traffic.responses
    assert not traffic.failures(), traffic.failures()
    assert not traffic.console_errors, traffic.console_errors
    assert any(s["lit"] > 0.05 for s in stats), stats
