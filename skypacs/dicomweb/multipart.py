"""``multipart/related`` bodies (RFC 2387, PS3.18 8.6.1.2), written as a stream.

A WADO-RS study retrieve is one multipart body of every instance: :func:`multipart_body` yields it
part by part, each part's payload chunk by chunk as the ObjectStore delivers it, so the server never
holds more than one chunk. When every part's length is known up front (objects sent as stored: the
catalog has their sizes), :func:`multipart_length` gives the exact Content-Length, so clients can show
progress and the response needs no chunked encoding.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field


@dataclass
class Part:
    """One body part: its Content-Type, optional extra headers, the payload as chunks, and the
    payload's length when known."""

    content_type: str
    body: Iterable[bytes]
    length: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def head(self, boundary: str) -> bytes:
        lines = [f"--{boundary}", f"Content-Type: {self.content_type}"]
        if self.length is not None:
            lines.append(f"Content-Length: {self.length}")
        lines.extend(f"{name}: {value}" for name, value in self.headers.items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def new_boundary() -> str:
    """A boundary that cannot occur in the payloads by chance (122 random bits)."""
    return uuid.uuid4().hex


def content_type(part_type: str, boundary: str, *, transfer_syntax: str | None = None) -> str:
    """``multipart/related; type="application/dicom"; boundary=...`` (PS3.18 8.7.3.3.2)."""
    value = f'multipart/related; type="{part_type}"; boundary={boundary}'
    if transfer_syntax:
        value += f"; transfer-syntax={transfer_syntax}"
    return value


def multipart_body(parts: Iterable[Part], boundary: str) -> Iterator[bytes]:
    """The body: each part's head, its payload chunks, CRLF; then the close delimiter. The close
    delimiter is written only after the last payload chunk: a failure while streaming leaves the body
    visibly incomplete rather than well-formed but short."""
    for part in parts:
        yield part.head(boundary)
        yield from part.body
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


def multipart_length(parts: Iterable[Part], boundary: str) -> int | None:
    """The exact body length of :func:`multipart_body`, or None when a part's length is unknown."""
    total = 0
    for part in parts:
        if part.length is None:
            return None
        total += len(part.head(boundary)) + part.length + 2
    return total + len(boundary) + 6
