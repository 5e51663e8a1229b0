"""``multipart/related`` request bodies (RFC 2046 5.1.1, RFC 2387, PS3.18 8.6.1.2), read as a stream.

A STOW-RS request may carry gigabytes of instances; :func:`read_parts` yields one part at a time as
the body's chunks arrive, so a consumer that stores each part before asking for the next holds at most
one part (plus a boundary's length) in memory, never the whole body. Chunks may split anything,
the boundary included: the search for the delimiter always keeps the bytes that could begin one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from skypacs.dicomweb.http import Headers
from skypacs.errors import InvalidObject

MAX_HEADER_BYTES = 16 * 1024
"""Most bytes one part's header block may take: a part with more is malformed, not a reason to buffer."""
MAX_BOUNDARY = 70
"""RFC 2046 5.1.1: a boundary is 1 to 70 characters."""
_TRANSPORT_PADDING = b" \t"


class MalformedMultipart(InvalidObject):
    """The body is not the multipart/related its Content-Type announces (HTTP 400)."""

    reason = "malformed-multipart"


@dataclass(frozen=True)
class BodyPart:
    headers: Headers
    body: bytes

    @property
    def content_type(self) -> str:
        """The part's media type (``type/subtype``, lower case), empty when the part declares none."""
        return media_type(self.headers.get("Content-Type", ""))[0]


def media_type(value: str) -> tuple[str, dict[str, str]]:
    """``type/subtype`` in lower case and the parameters (names in lower case, quoted strings unquoted,
    RFC 9110 5.6.6), e.g. ``multipart/related; type="application/dicom"; boundary="a;b"``."""
    kind, _, rest = value.partition(";")
    params: dict[str, str] = {}
    index = 0
    while index < len(rest):
        end_name = rest.find("=", index)
        if end_name < 0:
            break
        name = rest[index:end_name].strip(" \t;").lower()
        index = end_name + 1
        while index < len(rest) and rest[index] in " \t":
            index += 1
        if index < len(rest) and rest[index] == '"':
            chars, index = [], index + 1
            while index < len(rest) and rest[index] != '"':
                if rest[index] == "\\" and index + 1 < len(rest):
                    index += 1
                chars.append(rest[index])
                index += 1
            param = "".join(chars)
            index = rest.find(";", index)
            index = len(rest) if index < 0 else index + 1
        else:
            end = rest.find(";", index)
            end = len(rest) if end < 0 else end
            param, index = rest[index:end].strip(), end + 1
        if name:
            params[name] = param
    return kind.strip().lower(), params


def check_boundary(boundary: str) -> bytes:
    if not 1 <= len(boundary) <= MAX_BOUNDARY or not boundary.isascii():
        raise MalformedMultipart("the multipart boundary must be 1 to 70 ASCII characters (RFC 2046 5.1.1)")
    return boundary.encode("ascii")


def read_parts(chunks: Iterable[bytes], boundary: str) -> Iterator[BodyPart]:
    """Each part of the body, in order, as soon as its closing delimiter has arrived.

    Raises :class:`MalformedMultipart` when the body has no opening boundary, a part's headers are
    unreadable or too long, or the body ends before the close delimiter (``--boundary--``); parts
    yielded before then were complete. The preamble and epilogue are ignored (RFC 2046 5.1.1).
    """
    # The opening delimiter may start the body without a CRLF before it: pretend there was one.
    reader = _Buffer(chunks, b"\r\n")
    delimiter = b"\r\n--" + check_boundary(boundary)
    opening = reader.find(delimiter)
    if opening is None:
        raise MalformedMultipart("the body has no opening multipart boundary")
    reader.take(opening)  # the preamble and the delimiter
    while True:
        if not _after_delimiter(reader):
            return
        headers = _read_headers(reader)
        end = reader.find(delimiter)
        if end is None:
            raise MalformedMultipart("the body ends inside a part, before its closing boundary")
        body = reader.take(end - len(delimiter))
        reader.take(len(delimiter))
        yield BodyPart(headers, body)


def _after_delimiter(reader: _Buffer) -> bool:
    """Past ``--boundary``: False for the close delimiter, True (at the part's headers) otherwise."""
    if not reader.fill(2):
        raise MalformedMultipart("the body ends after a boundary, without the close delimiter")
    if reader.peek(2) == b"--":
        return False
    end = reader.find(b"\r\n", limit=MAX_HEADER_BYTES)
    if end is None:
        raise MalformedMultipart("a multipart boundary line does not end with CRLF")
    padding = reader.take(end - 2)
    reader.take(2)
    if padding.strip(_TRANSPORT_PADDING):
        raise MalformedMultipart("unexpected bytes after a multipart boundary")
    return True


def _read_headers(reader: _Buffer) -> Headers:
    if not reader.fill(2):
        raise MalformedMultipart("the body ends inside a part's headers")
    if reader.peek(2) == b"\r\n":
        reader.take(2)
        return Headers()
    end = reader.find(b"\r\n\r\n", limit=MAX_HEADER_BYTES)
    if end is None:
        raise MalformedMultipart(f"a part's headers are missing their blank line or exceed {MAX_HEADER_BYTES} bytes")
    block = reader.take(end - 4).decode("utf-8", "replace")
    reader.take(4)
    pairs = []
    for line in block.split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise MalformedMultipart("a part header line is not 'Name: value'")
        pairs.append((name.strip(), value.strip()))
    return Headers(pairs)


class _Buffer:
    """The unread bytes of a chunk stream, searched without rescanning what was already searched."""

    def __init__(self, chunks: Iterable[bytes], initial: bytes = b"") -> None:
        self._chunks = iter(chunks)
        self._data = bytearray(initial)
        self._done = False

    def _more(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._data += chunk
                return True
        self._done = True
        return False

    def fill(self, size: int) -> bool:
        """At least ``size`` bytes unread (False when the stream ends first)."""
        while len(self._data) < size:
            if self._done or not self._more():
                return False
        return True

    def peek(self, size: int) -> bytes:
        return bytes(self._data[:size])

    def take(self, size: int) -> bytes:
        with memoryview(self._data) as view, view[:size] as head:
            taken = head.tobytes()  # one copy, not two
        del self._data[:size]
        return taken

    def find(self, needle: bytes, *, limit: int | None = None) -> int | None:
        """The offset just past the first ``needle``, reading on as needed; None when the stream ends
        first, or when it has not appeared within ``limit`` bytes. Nothing is consumed: callers
        :meth:`take` what they found."""
        start = 0
        while True:
            found = self._data.find(needle, start)
            if found >= 0:
                return found + len(needle)
            # A needle cut by the chunk edge begins within the last len(needle) - 1 bytes.
            start = max(0, len(self._data) - len(needle) + 1)
            if limit is not None and start > limit:
                return None
            if self._done or not self._more():
                return None
