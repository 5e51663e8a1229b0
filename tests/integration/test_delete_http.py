"""DELETE of instances, series and studies over HTTP against the embedded archive, checked the way a
client would: QIDO-RS no longer finds what was deleted, WADO-RS answers 404 for it, and everything
else is retrieved byte for byte as before."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

from skypacs.config import Settings
from skypacs.dicomweb import delete, qido, wado
from skypacs.dicomweb.http import Router
from skypacs.dicomweb.server import DicomWebServer
from skypacs.embedded import EmbeddedArchive
from skypacs.keys import instance_key
from skypacs.ports import INSTANCE_DELETED, ArchiveEvent
from skypacs.services.delete import DeleteService
from tests.conftest import dicom_file
from tests.dicom_files import clone, new_uid

AS_STORED = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
SINGLE_PART = {"Accept": "application/dicom; transfer-syntax=*"}


@dataclass
class Pacs:
    archive: EmbeddedArchive
    server: DicomWebServer
    events: list[ArchiveEvent]
    study: str
    series: list[str]
    sops: dict[str, list[str]]
    data: dict[str, bytes]
    other: tuple[str, str, str]
    """(study, series, SOP Instance) of MR_small.dcm, stored as it is."""

    def url(self, study: str, series: str | None = None, sop: str | None = None) -> str:
        url = f"{self.server.url}/studies/{study}"
        if series:
            url += f"/series/{series}"
        if sop:
            url += f"/instances/{sop}"
        return url

    def object_file(self, study: str, series: str, sop: str) -> Path:
        return self.archive.store.local_path(instance_key(study, series, sop))


def http(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[Pacs]:
    archive = EmbeddedArchive(Settings(data_dir=tmp_path / "data"))
    study, series = new_uid(), [new_uid(), new_uid()]
    sops: dict[str, list[str]] = {uid: [] for uid in series}
    data: dict[str, bytes] = {}
    for number, series_uid in enumerate([series[0], series[0], series[0], series[1], series[1]], start=1):
        sop = new_uid()
        data[sop] = clone("CT_small.dcm", StudyInstanceUID=study, SeriesInstanceUID=series_uid, SOPInstanceUID=sop,
                          InstanceNumber=str(number))
        archive.store_service.store_part10(data[sop])
        sops[series_uid].append(sop)
    mr = dicom_file("MR_small.dcm").read_bytes()
    receipt = archive.store_service.store_part10(mr)
    _, other_study, _, other_series, _, name = receipt.info.key.split("/")
    other_sop = name.removesuffix(".dcm")
    data[other_sop] = mr
    archive.indexer().drain_once()
    events: list[ArchiveEvent] = []
    archive.events.subscribe(events.append, INSTANCE_DELETED)
    router = Router([*qido.routes(archive.query_service), *wado.routes(archive.retrieve_service),
                     *delete.routes(DeleteService(archive.catalog, archive.store, archive.index, archive.events))])
    server = DicomWebServer(router, port=0)
    server.start()
    try:
        yield Pacs(archive, server, events, study, series, sops, data, (other_study, other_series, other_sop))
    finally:
        server.stop()


def qido_sops(pacs: Pacs, study: str) -> set[str]:
    status, _, body = http(f"{pacs.server.url}/studies/{study}/instances", headers={"Accept": "application/dicom+json"})
    if status == 204:
        return set()
    assert status == 200
    return {item["00080018"]["Value"][0] for item in json.loads(body)}


def qido_studies(pacs: Pacs) -> set[str]:
    status, _, body = http(f"{pacs.server.url}/studies", headers={"Accept": "application/dicom+json"})
    return set() if status == 204 else {item["0020000D"]["Value"][0] for item in json.loads(body)}


def retrieved(pacs: Pacs, study: str, series: str, sop: str) -> bytes:
    status, _, body = http(pacs.url(study, series, sop), headers=SINGLE_PART)
    assert status == 200, body
    return body


def assert_other_study_untouched(pacs: Pacs) -> None:
    assert pacs.other[0] in qido_studies(pacs)
    assert retrieved(pacs, *pacs.other) == pacs.data[pacs.other[2]]


def test_delete_instance(pacs: Pacs) -> None:
    series = pacs.series[0]
    gone, *kept = pacs.sops[series]

    status, _, body = http(pacs.url(pacs.study, series, gone), "DELETE")

    assert (status, body) == (204, b"")
    assert qido_sops(pacs, pacs.study) == set(kept) | set(pacs.sops[pacs.series[1]])
    assert http(pacs.url(pacs.study, series, gone), headers=SINGLE_PART)[0] == 404
    assert not pacs.object_file(pacs.study, series, gone).exists()
    for sop in kept:
        assert retrieved(pacs, pacs.study, series, sop) == pacs.data[sop]
    status, _, _ = http(pacs.url(pacs.study, series), headers=AS_STORED)
    assert status == 200
    assert [event.detail["SOPInstanceUID"] for event in pacs.events] == [gone]
    assert_other_study_untouched(pacs)


def test_delete_series(pacs: Pacs) -> None:
    series, kept_series = pacs.series

    assert http(pacs.url(pacs.study, series), "DELETE")[0] == 204

    assert qido_sops(pacs, pacs.study) == set(pacs.sops[kept_series])
    status, _, body = http(f"{pacs.url(pacs.study)}/series", headers={"Accept": "application/dicom+json"})
    assert status == 200 and [item["0020000E"]["Value"][0] for item in json.loads(body)] == [kept_series]
    assert http(pacs.url(pacs.study, series), headers=AS_STORED)[0] == 404
    for sop in pacs.sops[series]:
        assert http(pacs.url(pacs.study, series, sop), headers=SINGLE_PART)[0] == 404
        assert not pacs.object_file(pacs.study, series, sop).exists()
    for sop in pacs.sops[kept_series]:
        assert retrieved(pacs, pacs.study, kept_series, sop) == pacs.data[sop]
    assert sorted(event.detail["SOPInstanceUID"] for event in pacs.events) == sorted(pacs.sops[series])
    assert_other_study_untouched(pacs)


def test_delete_study(pacs: Pacs) -> None:
    assert http(pacs.url(pacs.study), "DELETE")[0] == 204

    assert qido_studies(pacs) == {pacs.other[0]}
    assert qido_sops(pacs, pacs.study) == set()
    assert http(pacs.url(pacs.study), headers=AS_STORED)[0] == 404
    assert http(f"{pacs.url(pacs.study)}/metadata", headers={"Accept": "application/dicom+json"})[0] == 404
    assert not (pacs.archive.store.root / "studies" / pacs.study).exists()
    assert len(pacs.events) == 5
    assert {event.detail["StudyInstanceUID"] for event in pacs.events} == {pacs.study}
    assert_other_study_untouched(pacs)


def test_repeated_delete_is_not_found(pacs: Pacs) -> None:
    series = pacs.series[1]
    sop = pacs.sops[series][0]
    assert http(pacs.url(pacs.study, series, sop), "DELETE")[0] == 204
    status, _, body = http(pacs.url(pacs.study, series, sop), "DELETE")
    assert status == 404 and "error" in json.loads(body)
    assert http(pacs.url(pacs.study), "DELETE")[0] == 204
    assert http(pacs.url(pacs.study), "DELETE")[0] == 404
    assert http(pacs.url(pacs.study, series), "DELETE")[0] == 404
    assert len(pacs.events) == 5


def test_unknown_resources_are_not_found(pacs: Pacs) -> None:
    series, sop = pacs.series[0], pacs.sops[pacs.series[0]][0]
    assert http(pacs.url(new_uid()), "DELETE")[0] == 404
    assert http(pacs.url(pacs.study, new_uid()), "DELETE")[0] == 404
    assert http(pacs.url(pacs.study, series, new_uid()), "DELETE")[0] == 404
    assert http(pacs.url(pacs.study, pacs.series[1], sop), "DELETE")[0] == 404  # not in that series
    assert retrieved(pacs, pacs.study, series, sop) == pacs.data[sop]
    assert pacs.events == []


@pytest.mark.parametrize("path", ["/studies/1.2.abc", "/studies/1.2.3/series/1..2",
                                  "/studies/1.2.3/series/1.2.3/instances/01.2"])
def test_invalid_uids_are_bad_requests(pacs: Pacs, path: str) -> None:
    status, _, body = http(pacs.server.url + path, "DELETE")
    assert status == 400 and "not a valid UID" in json.loads(body)["error"]
    assert len(qido_sops(pacs, pacs.study)) == 5
