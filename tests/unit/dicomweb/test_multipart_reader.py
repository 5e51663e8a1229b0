"""Streaming multipart/related reading: what the writer writes, and what real clients send, read back
part by part whatever the chunking."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from skypacs.dicomweb import multipart
from skypacs.dicomweb.multipart_reader import MalformedMultipart, media_type, read_parts
from tests.conftest import dicom_file

BOUNDARY = "a1b2c3"


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def _body(payloads: list[bytes], boundary: str = BOUNDARY) -> bytes:
    parts = [multipart.Part("application/dicom", [payload]) for payload in payloads]
    return b"".join(multipart.multipart_body(parts, boundary))


def test_reads_back_what_the_writer_writes_whatever_the_chunk_size() -> None:
    payloads = [dicom_file("CT_small.dcm").read_bytes(), b"", b"\r\n--a1b2c", b"x" * 70_000]
    body = _body(payloads)
    for size in (1, 2, 7, 64 * 1024, len(body)):
        parts = list(read_parts(_chunks(body, size), BOUNDARY))
        assert [part.body for part in parts] == payloads
        assert {part.content_type for part in parts} == {"application/dicom"}


def test_boundary_split_across_one_byte_chunks_and_preamble_and_epilogue_ignored() -> None:
    body = (b"preamble text\r\n--" + BOUNDARY.encode() + b"  \r\nContent-Type: application/dicom\r\n"
            b"X-Extra: 1\r\n\r\nfirst\r\n--" + BOUNDARY.encode() + b"\r\n\r\nsecond\r\n--"
            + BOUNDARY.encode() + b"--\r\nepilogue")
    parts = list(read_parts(_chunks(body, 1), BOUNDARY))
    assert [part.body for part in parts] == [b"first", b"second"]
    assert parts[0].headers["content-type"] == "application/dicom"
    assert parts[0].headers["X-EXTRA"] == "1"
    assert parts[1].content_type == ""


def test_parts_come_one_at_a_time_as_the_body_arrives() -> None:
    consumed = []
    body = _body([b"one", b"two" * 100_000, b"three" * 10_000])

    def chunks() -> Iterator[bytes]:
        for chunk in _chunks(body, 1000):
            consumed.append(len(chunk))
            yield chunk

    parts = read_parts(chunks(), BOUNDARY)
    assert next(parts).body == b"one"
    assert sum(consumed) < 2000  # the big second part has not been read yet
    assert next(parts).body == b"two" * 100_000
    assert sum(consumed) < len(body)


@pytest.mark.parametrize("body, message", [
    (b"no boundary anywhere", "no opening"),
    (b"--a1b2c3\r\nContent-Type: application/dicom\r\n\r\ncut short", "ends inside a part"),
    (b"--a1b2c3\r\nContent-Type: application/dicom", "headers"),
    (b"--a1b2c3\r\nnot a header\r\n\r\nbody\r\n--a1b2c3--", "Name: value"),
    (b"--a1b2c3junk\r\n\r\nbody\r\n--a1b2c3--", "unexpected bytes"),
    (b"--a1b2c3\r\n" + b"X: " + b"y" * 20_000 + b"\r\n\r\nbody\r\n--a1b2c3--", "headers"),
])
def test_malformed_bodies_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(MalformedMultipart, match=message):
        list(read_parts(_chunks(body, 3), BOUNDARY))


def test_a_complete_part_is_yielded_before_the_damage_is_found() -> None:
    body = _body([b"good"])[: -len(f"--{BOUNDARY}--\r\n")] + f"--{BOUNDARY}\r\n\r\ncut".encode()
    parts = read_parts(_chunks(body, 5), BOUNDARY)
    assert next(parts).body == b"good"
    with pytest.raises(MalformedMultipart):
        next(parts)


def test_boundary_length_is_checked() -> None:
    with pytest.raises(MalformedMultipart, match="1 to 70"):
        list(read_parts([b""], "x" * 71))


def test_media_type_parameters_quoted_or_not() -> None:
    assert media_type('Multipart/Related; type="application/dicom"; boundary="a;b c"') == (
        "multipart/related", {"type": "application/dicom", "boundary": "a;b c"})
    assert media_type("multipart/related;boundary=xyz;TYPE=application/dicom") == (
        "multipart/related", {"boundary": "xyz", "type": "application/dicom"})
    assert media_type('a/b; q="x\\"y"') == ("a/b", {"q": 'x"y'})
    assert media_type("") == ("", {})
