"""multipart/related bodies: what a MIME parser reads back, and exact lengths."""

from __future__ import annotations

from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP

import pytest

from skypacs.dicomweb.multipart import Part, content_type, multipart_body, multipart_length, new_boundary


def _parse(body: bytes, boundary: str) -> list[tuple[str, bytes]]:
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type('application/dicom', boundary)}\r\n\r\n".encode() + body)
    return [(part.get_content_type(), part.get_payload(decode=True)) for part in message.iter_parts()]


def test_a_mime_parser_reads_every_part_back() -> None:
    boundary = new_boundary()
    parts = [Part("application/dicom", [b"abc", b"def"], length=6), Part("application/dicom", [b"\r\n--x\r\n"])]
    body = b"".join(multipart_body(parts, boundary))
    assert _parse(body, boundary) == [("application/dicom", b"abcdef"), ("application/dicom", b"\r\n--x\r\n")]
    assert body.endswith(f"--{boundary}--\r\n".encode())


def test_length_is_exact_when_every_part_length_is_known() -> None:
    boundary = new_boundary()
    parts = [Part("application/octet-stream", [b"x" * 1000], length=1000, headers={"Content-Location": "/a"}),
             Part("application/octet-stream", [b""], length=0)]
    assert multipart_length(parts, boundary) == len(b"".join(multipart_body(parts, boundary)))
    assert multipart_length([*parts, Part("application/dicom", [b"?"])], boundary) is None


def test_boundaries_are_unique_and_content_type_names_the_part_type() -> None:
    assert new_boundary() != new_boundary()
    assert content_type("application/dicom", "b", transfer_syntax="1.2.840.10008.1.2.1") == (
        'multipart/related; type="application/dicom"; boundary=b; transfer-syntax=1.2.840.10008.1.2.1')


def test_close_delimiter_comes_only_after_the_last_chunk() -> None:
    """A payload that fails half-way leaves the body without its close delimiter: visibly incomplete."""

    def payload() -> Iterator[bytes]:
        yield b"partial"
        raise OSError("disk")

    chunks: list[bytes] = []
    with pytest.raises(OSError):
        for chunk in multipart_body([Part("application/dicom", payload())], "b"):
            chunks.append(chunk)  # noqa: PERF402 - the chunks before the failure are the point
    assert b"partial" in b"".join(chunks)
    assert b"--b--" not in b"".join(chunks)
