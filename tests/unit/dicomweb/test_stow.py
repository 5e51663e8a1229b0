"""STOW-RS through the route table: what a sender is told for each kind of request and part, and that
what it sent is either stored or quarantined."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pydicom
import pytest

from skypacs.config import Settings
from skypacs.dicomweb import multipart, stow
from skypacs.dicomweb.http import Headers, Request, Response, Router
from skypacs.embedded import EmbeddedArchive
from tests.conftest import dicom_file
from tests.dicom_files import clone, new_uid

BOUNDARY = "stow-boundary"
BASE = "http://pacs.example/dicom-web"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


@pytest.fixture
def archive(tmp_path: Any) -> EmbeddedArchive:
    return EmbeddedArchive(Settings(data_dir=tmp_path / "data"))


def _router(archive: EmbeddedArchive, **options: int) -> Router:
    return Router(stow.routes(archive.store_service, **options))


def _body(*parts: tuple[str, bytes]) -> bytes:
    return b"".join(multipart.multipart_body(
        [multipart.Part(content_type, [data]) for content_type, data in parts], BOUNDARY))


def _post(router: Router, body: bytes | Iterator[bytes], *, path: str = "/studies",
          content_type: str = CONTENT_TYPE, headers: dict[str, str] | None = None) -> Response:
    all_headers = {"Content-Type": content_type, **(headers or {})}
    return router.dispatch(Request("POST", path, headers=Headers(all_headers), body=body, base_url=BASE))


def _json(response: Response) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(response.read())
    return result


def _items(module: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return list(module.get(tag, {}).get("Value", []))


def _uids(data: bytes) -> tuple[str, str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID


def _stored_bytes(archive: EmbeddedArchive, data: bytes) -> bytes:
    with archive.store.open(archive.store_service.validate(data).key) as stream:
        return stream.read()


def _without_sop_instance_uid(name: str) -> bytes:
    ds = pydicom.dcmread(dicom_file(name))
    del ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_all_stored_is_200_with_referenced_sops_and_retrieve_urls(archive: EmbeddedArchive) -> None:
    study = new_uid()
    objects = [clone("CT_small.dcm", StudyInstanceUID=study, SOPInstanceUID=new_uid()) for _ in range(2)]
    response = _post(_router(archive), _body(*[("application/dicom", data) for data in objects]))
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/dicom+json"
    module = _json(response)
    assert module["00081190"] == {"vr": "UR", "Value": [f"{BASE}/studies/{study}"]}
    assert "00081198" not in module
    referenced = _items(module, "00081199")
    for item, data in zip(referenced, objects, strict=True):
        study_uid, series, sop, sop_class = _uids(data)
        assert item["00081150"]["Value"] == [sop_class]
        assert item["00081155"]["Value"] == [sop]
        assert item["00081190"]["Value"] == [f"{BASE}/studies/{study_uid}/series/{series}/instances/{sop}"]
    for data in objects:
        assert _stored_bytes(archive, data) == data
    assert archive.queue.counts().pending == 2  # stored and queued for indexing


def test_mixed_parts_are_202_and_the_bad_ones_quarantined(archive: EmbeddedArchive) -> None:
    good = clone("CT_small.dcm", SOPInstanceUID=new_uid())
    truncated = clone("MR_small.dcm", SOPInstanceUID=new_uid())
    no_sop = _without_sop_instance_uid("CT_small.dcm")
    response = _post(_router(archive), _body(
        ("application/dicom", good),
        ("application/dicom", b"this is not DICOM at all"),
        ("application/dicom", truncated[: len(truncated) // 2]),
        ("application/dicom", no_sop),
        ("application/json", b'{"not": "dicom"}'),
    ))
    assert response.status == 202
    module = _json(response)
    assert [item["00081155"]["Value"][0] for item in _items(module, "00081199")] == [_uids(good)[2]]
    failed = _items(module, "00081198")
    assert [item["00081197"]["Value"][0] for item in failed] == [0xC000] * 4
    assert "00081155" not in failed[0]
    assert failed[1]["00081155"]["Value"] == [_uids(truncated)[2]]  # the sender can tell which failed
    assert failed[2]["00081150"]["Value"] == ["1.2.840.10008.5.1.4.1.1.2"] and "00081155" not in failed[2]
    reasons = sorted(record.reason for record in archive.catalog.list_quarantine())
    assert reasons == ["cannot-decode", "cannot-decode", "missing-attribute", "unsupported-media-type"]
    sizes = sorted(record.size for record in archive.catalog.list_quarantine())
    assert sizes == sorted([24, len(truncated) // 2, len(no_sop), 16])  # every refused byte kept


def test_none_stored_is_409(archive: EmbeddedArchive) -> None:
    response = _post(_router(archive), _body(("application/dicom", b"junk")))
    assert response.status == 409
    assert _items(_json(response), "00081198")[0]["00081197"]["Value"] == [0xC000]


def test_instance_of_another_study_fails_on_post_to_a_study(archive: EmbeddedArchive) -> None:
    study = new_uid()
    mine = clone("CT_small.dcm", StudyInstanceUID=study, SOPInstanceUID=new_uid())
    other = clone("CT_small.dcm", StudyInstanceUID=new_uid(), SOPInstanceUID=new_uid())
    response = _post(_router(archive), _body(("application/dicom", mine), ("application/dicom", other)),
                     path=f"/studies/{study}")
    assert response.status == 202
    module = _json(response)
    assert module["00081190"]["Value"] == [f"{BASE}/studies/{study}"]
    [failed] = _items(module, "00081198")
    assert failed["00081155"]["Value"] == [_uids(other)[2]]
    assert failed["00081197"]["Value"] == [stow.FailureReason.STUDY_INSTANCE_UID_MISMATCH]
    assert [record.reason for record in archive.catalog.list_quarantine()] == ["study-mismatch"]


def test_unsupported_sop_class_gets_its_own_reason(archive: EmbeddedArchive) -> None:
    data = clone("CT_small.dcm", SOPClassUID="1.2.3.4", SOPInstanceUID=new_uid())
    response = _post(_router(archive), _body(("application/dicom", data)))
    assert response.status == 409
    assert _items(_json(response), "00081198")[0]["00081197"]["Value"] == [0x0122]


@pytest.mark.parametrize("content_type", [
    "application/dicom+json",
    "application/json",
    "application/dicom",
    f'multipart/related; type="application/dicom+xml"; boundary={BOUNDARY}',
    "",
])
def test_other_content_types_are_415_saying_what_is_supported(archive: EmbeddedArchive,
                                                              content_type: str) -> None:
    response = _post(_router(archive), b"{}", content_type=content_type)
    assert response.status == 415
    assert 'multipart/related; type="application/dicom"' in _json(response)["error"]


@pytest.mark.parametrize("content_type", [
    f"multipart/related; boundary={BOUNDARY}",
    f'Multipart/Related; boundary="{BOUNDARY}"; type=application/dicom',
])
def test_type_parameter_may_be_missing_or_unquoted(archive: EmbeddedArchive, content_type: str) -> None:
    data = clone("CT_small.dcm", SOPInstanceUID=new_uid())
    assert _post(_router(archive), _body(("application/dicom", data)), content_type=content_type).status == 200


def test_malformed_multipart_is_400(archive: EmbeddedArchive) -> None:
    router = _router(archive)
    assert _post(router, b"no boundary here").status == 400
    assert _post(router, _body()).status == 400  # no parts at all
    assert _post(router, b"x", content_type='multipart/related; type="application/dicom"').status == 400
    cut = _body(("application/dicom", clone("CT_small.dcm", SOPInstanceUID=new_uid())))[:-30]
    response = _post(router, cut)
    assert response.status == 400
    assert "closing boundary" in _json(response)["error"]


def test_oversize_body_is_413_by_content_length_or_while_streaming(archive: EmbeddedArchive) -> None:
    router = _router(archive, max_body_bytes=1000)
    data = clone("CT_small.dcm", SOPInstanceUID=new_uid())
    body = _body(("application/dicom", data))
    read: list[int] = []

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 100):
            read.append(start)
            yield body[start:start + 100]

    response = _post(router, chunks(), headers={"Content-Length": str(len(body))})
    assert response.status == 413
    assert read == []  # refused on the header, before reading the body
    response = _post(router, chunks())
    assert response.status == 413
    assert "1000 bytes" in _json(response)["error"]
    assert len(read) <= 11
    assert archive.queue.counts().pending == 0


def test_one_byte_chunks_store_the_same(archive: EmbeddedArchive) -> None:
    data = clone("MR_small.dcm", SOPInstanceUID=new_uid())
    body = _body(("application/dicom", data))
    response = _post(_router(archive), iter([body[i:i + 1] for i in range(len(body))]))
    assert response.status == 200
    assert _stored_bytes(archive, data) == data


def test_xml_answer_is_not_acceptable_and_bad_study_uid_is_400(archive: EmbeddedArchive) -> None:
    router = _router(archive)
    data = _body(("application/dicom", clone("CT_small.dcm", SOPInstanceUID=new_uid())))
    assert _post(router, data, headers={"Accept": "application/dicom+xml"}).status == 406
    assert _post(router, data, path="/studies/not-a-uid").status == 400
