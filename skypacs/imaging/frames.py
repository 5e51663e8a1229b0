"""Frames of a stored instance, read with as few bytes and requests as possible (WADO-RS frames, PS3.18
10.4.1.1.4, and rendering).

Objects are stored as received, so a frame is located in the stored bytes, never by decoding the
object. Cost model: on S3 every ranged read is a round trip, on the filesystem an ``open`` + ``read``.

- Objects of at most :data:`WHOLE_OBJECT_LIMIT` bytes (a typical CT/MR slice) are fetched in one read.
  Larger ones: the header through 64 KiB blocks (``skypacs.parsing.RangedReader``), then one read per
  run of consecutive frames.
- Native pixel data (implicit/explicit VR little endian): offset arithmetic (PS3.5 8.1.1), bit-packed
  frames of Bits Allocated 1 included (PS3.5 8.1.1 note: frames need not start on a byte boundary).
- Encapsulated pixel data (PS3.5 A.4): the Extended Offset Table (7FE0,0001/0002) when present, else
  the Basic Offset Table, else the fragments are walked: one fragment per frame when their counts agree,
  otherwise pydicom's frame detection on the fragments (``pydicom.encaps.generate_frames``).
- Big endian and deflated objects have no usable byte offsets for frames: they are read whole and
  decoded with pydicom. Both are rare (big endian is retired; deflate is for non-image objects).

Frames are numbered from 1 (PS3.18 10.4.1.1.4). Native frames are always given as little-endian
octets labelled Explicit VR Little Endian, the only uncompressed form PS3.18 Table 8.7.3-4 allows.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import pack_bits, pixel_array
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from skypacs.errors import CannotTranscode, DamagedObject, InvalidQuery, NotFound
from skypacs.parsing import BLOCK_SIZE, DEFER_SIZE, RangedReader
from skypacs.ports import ObjectStore

WHOLE_OBJECT_LIMIT = 1024 * 1024
"""Objects up to this size are fetched in one request: one S3 round trip instead of two or three."""

WHOLE_FRAGMENTS_LIMIT = 16 * 1024 * 1024
"""Encapsulated pixel data without offset tables up to this size are read in one request to find the
frames; beyond it, fragment headers are walked with small reads (bounded memory, more requests)."""

PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = 0x7FE00008
DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
_PIXEL_TAGS = frozenset({PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA})
_ITEM = 0xFFFEE000
_EMPTY_BASIC_OFFSET_TABLE = b"\xfe\xff\x00\xe0\x00\x00\x00\x00"
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_NATIVE_LITTLE_ENDIAN = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian})
_DECODED_WHOLE = frozenset({ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian})


@dataclass(frozen=True)
class Frame:
    """One frame: ``data`` is the frame's native little-endian pixel bytes, or its compressed bitstream
    as stored (fragments joined), in ``transfer_syntax_uid``."""

    number: int
    data: bytes
    transfer_syntax_uid: str


class _Source:
    """The stored object's bytes, fetched whole when small, else in blocks and exact ranges."""

    def __init__(self, store: ObjectStore, key: str, size: int) -> None:
        self.store, self.key, self.size = store, key, size
        self.whole: bytes | None = None
        self.reader: RangedReader | None = None
        if size <= WHOLE_OBJECT_LIMIT:
            self.whole = store.read_range(key, 0, size)
        else:
            self.reader = RangedReader(store, key, size)

    def header_stream(self) -> io.BufferedIOBase:
        if self.whole is not None:
            return io.BytesIO(self.whole)
        assert self.reader is not None
        return io.BufferedReader(self.reader, buffer_size=8192)

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``; fewer only at the end of the object."""
        length = max(0, min(length, self.size - offset))
        if self.whole is not None:
            return self.whole[offset : offset + length]
        cached = self._from_blocks(offset, length)
        if cached is not None:
            return cached
        return self.store.read_range(self.key, offset, length)

    def _from_blocks(self, offset: int, length: int) -> bytes | None:
        assert self.reader is not None
        blocks = self.reader._blocks  # blocks the header read already fetched
        first, last = offset // BLOCK_SIZE, (offset + max(length, 1) - 1) // BLOCK_SIZE
        if not all(index in blocks for index in range(first, last + 1)):
            return None
        joined = b"".join(blocks[index] for index in range(first, last + 1))
        start = offset - first * BLOCK_SIZE
        return joined[start : start + length]

    def read_all(self) -> bytes:
        return self.whole if self.whole is not None else self.store.read_range(self.key, 0, self.size)


@dataclass(frozen=True)
class _PixelData:
    """Where and how the pixel data of one stored object are encoded."""

    header: Dataset
    transfer_syntax_uid: UID
    tag: int
    value_offset: int
    length: int | None
    """``None`` for encapsulated (undefined length) pixel data."""
    number_of_frames: int

    @property
    def encapsulated(self) -> bool:
        return self.length is None

    @property
    def frame_bits(self) -> int:
        h = self.header
        bits = 32 if self.tag == FLOAT_PIXEL_DATA else 64 if self.tag == DOUBLE_FLOAT_PIXEL_DATA else None
        bits_allocated = bits or int(h.BitsAllocated)
        return int(h.Rows) * int(h.Columns) * int(h.get("SamplesPerPixel", 1) or 1) * bits_allocated


def _uid_of(header: Dataset) -> str:
    return str(header.get("SOPInstanceUID", "?"))


def _frame_count(header: Dataset) -> int:
    try:
        return max(1, int(header.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _locate(source: _Source) -> _PixelData:
    stream = source.header_stream()
    try:
        defer = None if source.whole is not None else DEFER_SIZE
        header = pydicom.dcmread(stream, stop_before_pixels=True, defer_size=defer)
        syntax = UID(str(header.file_meta.TransferSyntaxUID))
    except Exception as exc:  # pydicom raises many types on corrupt or cut-short input
        raise DamagedObject(
            f"stored object {source.key} header cannot be read: {type(exc).__name__}: {exc}"
        ) from exc
    frames = _frame_count(header)
    if syntax in _DECODED_WHOLE:
        return _PixelData(header, syntax, PIXEL_DATA, -1, -1, frames)
    position = stream.tell()
    head = source.read(position, 12)
    if 0 < len(head) < 8:
        raise DamagedObject(f"stored object {source.key} is truncated: it ends inside an element header")
    if not head:
        _check_header_complete(source, header)
        raise NotFound(f"instance {_uid_of(header)} has no pixel data")
    little = syntax.is_little_endian
    group, element = struct.unpack("<HH" if little else ">HH", head[:4])
    tag = group << 16 | element
    if tag not in _PIXEL_TAGS:
        raise NotFound(f"instance {_uid_of(header)} has no pixel data")
    if syntax.is_implicit_VR:
        (length,) = struct.unpack("<I", head[4:8])
        value_offset = position + 8
    else:
        if len(head) < 12:
            raise DamagedObject(f"stored object {source.key} is cut short inside the Pixel Data header")
        (length,) = struct.unpack("<I", head[8:12])
        value_offset = position + 12
    if length == 0xFFFFFFFF:
        return _PixelData(header, syntax, tag, value_offset, None, frames)
    if value_offset + length > source.size:
        raise DamagedObject(
            f"stored object {source.key} is truncated: Pixel Data needs {value_offset + length} bytes, "
            f"the object has {source.size}"
        )
    return _PixelData(header, syntax, tag, value_offset, length, frames)


def _check_header_complete(source: _Source, header: Dataset) -> None:
    """pydicom reads a value cut short by the end of the object without complaint: an object cut inside
    its header would pass for one without pixel data, and so would one cut inside an element header,
    which pydicom drops silently: the last element must end where the object ends."""
    end = None
    for tag in header.keys():  # noqa: SIM118 - iterating a Dataset yields elements, not tags
        raw = header.get_item(tag, keep_deferred=True)
        value_tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
        end = None
        if value_tell is not None and length is not None and length != 0xFFFFFFFF:
            end = value_tell + length
            if end > source.size:
                raise DamagedObject(
                    f"stored object {source.key} is truncated: element ({tag >> 16:04X},{tag & 0xFFFF:04X}) "
                    f"needs {end} bytes, the object has {source.size}"
                )
    if end is not None and end != source.size:
        raise DamagedObject(f"stored object {source.key} is truncated: it ends inside an element header")


def _check_numbers(numbers: Sequence[int], frames: int) -> list[int]:
    if not numbers:
        raise InvalidQuery("no frame numbers given")
    checked = []
    for number in numbers:
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise InvalidQuery(f"frame numbers are integers from 1: {number!r} is not one")
        if number > frames:
            raise NotFound(f"frame {number} does not exist: the instance has {frames} frame(s)")
        checked.append(number)
    return checked


# --- native pixel data ----------------------------------------------------------------------------


def _native_frames(source: _Source, pixels: _PixelData, numbers: list[int]) -> list[Frame]:
    assert pixels.length is not None
    frame_bits = pixels.frame_bits
    needed = (frame_bits * pixels.number_of_frames + 7) // 8
    if needed > pixels.length:
        raise DamagedObject(
            f"stored object {source.key}: Pixel Data holds {pixels.length} bytes, "
            f"{pixels.number_of_frames} frame(s) need {needed}"
        )
    result: list[Frame] = []
    if frame_bits % 8 == 0:
        frame_length = frame_bits // 8
        for start_number, count in _runs(numbers):
            start = pixels.value_offset + (start_number - 1) * frame_length
            data = source.read(start, count * frame_length)
            if len(data) < count * frame_length:
                raise DamagedObject(f"stored object {source.key} is truncated inside frame data")
            for index in range(count):
                chunk = data[index * frame_length : (index + 1) * frame_length]
                result.append(Frame(start_number + index, chunk, ExplicitVRLittleEndian))
    else:
        for number in sorted(set(numbers)):
            result.append(Frame(number, _bit_packed_frame(source, pixels, number), ExplicitVRLittleEndian))
    by_number = {frame.number: frame for frame in result}
    return [by_number[number] for number in numbers]


def _bit_packed_frame(source: _Source, pixels: _PixelData, number: int) -> bytes:
    """A frame of Bits Allocated 1 data that does not start on a byte boundary, re-packed from bit 0."""
    frame_bits = pixels.frame_bits
    first_bit = (number - 1) * frame_bits
    start_byte, end_byte = first_bit // 8, (first_bit + frame_bits + 7) // 8
    data = source.read(pixels.value_offset + start_byte, end_byte - start_byte)
    if len(data) < end_byte - start_byte:
        raise DamagedObject(f"stored object {source.key} is truncated inside frame data")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    offset = first_bit - start_byte * 8
    return bytes(np.packbits(bits[offset : offset + frame_bits], bitorder="little").tobytes())


def _runs(numbers: list[int]) -> Iterator[tuple[int, int]]:
    """Consecutive frame numbers as (first, count): one read per run."""
    ordered = sorted(set(numbers))
    start = previous = ordered[0]
    for number in ordered[1:]:
        if number != previous + 1:
            yield start, previous - start + 1
            start = number
        previous = number
    yield start, previous - start + 1


# --- encapsulated pixel data ----------------------------------------------------------------------


def _item_header(data: bytes | memoryview, offset: int) -> tuple[int, int]:
    group, element, length = struct.unpack_from("<HHI", data, offset)
    return group << 16 | element, length


def _parse_fragments(data: bytes, key: str, *, until_delimiter: bool) -> list[bytes]:
    """The fragments' values in ``data`` (a run of items). With ``until_delimiter``, the run must end
    with the Sequence Delimitation Item: its absence means the object was cut short."""
    fragments: list[bytes] = []
    offset = 0
    while offset + 8 <= len(data):
        tag, length = _item_header(data, offset)
        if tag == _SEQUENCE_DELIMITER:
            return fragments
        if tag != _ITEM or length == 0xFFFFFFFF:
            raise DamagedObject(f"stored object {key}: unexpected tag {tag:08X} among pixel data fragments")
        if offset + 8 + length > len(data):
            raise DamagedObject(f"stored object {key} is truncated inside a pixel data fragment")
        fragments.append(data[offset + 8 : offset + 8 + length])
        offset += 8 + length
    if until_delimiter:
        raise DamagedObject(f"stored object {key} is truncated: pixel data fragments have no end delimiter")
    if offset != len(data):
        raise DamagedObject(f"stored object {key}: a frame's fragments do not end on an item boundary")
    return fragments


def _basic_offsets(source: _Source, pixels: _PixelData) -> tuple[list[int], int]:
    """The Basic Offset Table's offsets and the file offset of the first fragment."""
    head = source.read(pixels.value_offset, 8)
    if len(head) < 8:
        raise DamagedObject(f"stored object {source.key} is truncated before the Basic Offset Table")
    tag, length = _item_header(head, 0)
    if tag != _ITEM:
        raise DamagedObject(
            f"stored object {source.key}: encapsulated Pixel Data does not start with an item"
        )
    table = source.read(pixels.value_offset + 8, length) if length else b""
    if len(table) < length or length % 4:
        raise DamagedObject(f"stored object {source.key}: Basic Offset Table is cut short or malformed")
    offsets = list(struct.unpack(f"<{length // 4}I", table))
    return offsets, pixels.value_offset + 8 + length


def _extended_offsets(source: _Source, pixels: _PixelData) -> tuple[list[int], list[int]] | None:
    header = pixels.header
    if 0x7FE00001 not in header or 0x7FE00002 not in header:
        return None
    tables = []
    for tag in (0x7FE00001, 0x7FE00002):
        raw = header.get_item(tag, keep_deferred=True)
        value = getattr(raw, "value", None)
        if value is None and isinstance(raw, RawDataElement):  # deferred by the header read: fetch it
            value = source.read(int(raw.value_tell), int(raw.length))
        if value is None:
            return None
        tables.append(list(np.frombuffer(bytes(value), dtype="<u8").tolist()))
    offsets, lengths = tables
    if len(offsets) != pixels.number_of_frames or len(lengths) != pixels.number_of_frames:
        return None  # inconsistent with Number of Frames: fall back to the other ways
    return offsets, lengths


def _encapsulated_frames(source: _Source, pixels: _PixelData, numbers: list[int]) -> list[Frame]:
    offsets, first_fragment = _basic_offsets(source, pixels)
    syntax = str(pixels.transfer_syntax_uid)
    count = pixels.number_of_frames
    data_by_number: dict[int, bytes] = {}
    extended = _extended_offsets(source, pixels)
    if extended is not None:
        # PS3.5 A.4: with an Extended Offset Table each frame is exactly one fragment.
        eot_offsets, eot_lengths = extended
        for number in sorted(set(numbers)):
            start, length = first_fragment + eot_offsets[number - 1], eot_lengths[number - 1]
            item = source.read(start, 8 + length)
            if len(item) < 8 + length:
                raise DamagedObject(f"stored object {source.key} is truncated inside frame {number}")
            tag, item_length = _item_header(item, 0)
            if tag != _ITEM or item_length < length:
                raise DamagedObject(
                    f"stored object {source.key}: Extended Offset Table does not point at frame {number}"
                )
            data_by_number[number] = item[8 : 8 + length]
    elif len(offsets) == count and offsets == sorted(offsets) and offsets[0] == 0:
        data_by_number = _frames_by_basic_offsets(source, offsets, first_fragment, numbers)
    else:
        data_by_number = _frames_by_walking(source, pixels, first_fragment, numbers)
    return [Frame(number, data_by_number[number], syntax) for number in numbers]


def _frames_by_basic_offsets(
    source: _Source, offsets: list[int], first_fragment: int, numbers: list[int]
) -> dict[int, bytes]:
    count = len(offsets)
    result: dict[int, bytes] = {}
    for start_number, run in _runs(numbers):
        last = start_number + run - 1
        start = first_fragment + offsets[start_number - 1]
        to_end = last == count
        end = source.size if to_end else first_fragment + offsets[last]
        data = source.read(start, end - start)
        if not to_end and len(data) < end - start:
            raise DamagedObject(f"stored object {source.key} is truncated inside frame {last}")
        for number in range(start_number, last + 1):
            begin = offsets[number - 1] - offsets[start_number - 1]
            finish = None if number == count else offsets[number] - offsets[start_number - 1]
            fragments = _parse_fragments(data[begin:finish], source.key, until_delimiter=number == count)
            result[number] = b"".join(fragments)
    return result


def _frames_by_walking(
    source: _Source, pixels: _PixelData, first_fragment: int, numbers: list[int]
) -> dict[int, bytes]:
    count = pixels.number_of_frames
    remaining = source.size - first_fragment
    if remaining <= WHOLE_FRAGMENTS_LIMIT or count == 1:
        data = source.read(first_fragment, remaining)
        fragments = _parse_fragments(data, source.key, until_delimiter=True)
        return _assign_fragments(source, pixels, fragments, numbers)
    # Large: learn where the fragments are from their 8-byte headers, then read only the needed ones.
    spans: list[tuple[int, int]] = []
    offset = first_fragment
    while True:
        head = source.read(offset, 8)
        if len(head) < 8:
            raise DamagedObject(
                f"stored object {source.key} is truncated: pixel data fragments have no end delimiter"
            )
        tag, length = _item_header(head, 0)
        if tag == _SEQUENCE_DELIMITER:
            break
        if tag != _ITEM or offset + 8 + length > source.size:
            raise DamagedObject(
                f"stored object {source.key}: pixel data fragment at {offset} is damaged or cut short"
            )
        spans.append((offset + 8, length))
        offset += 8 + length
    if len(spans) == count:
        return {number: source.read(*spans[number - 1]) for number in set(numbers)}
    fragments = [source.read(start, length) for start, length in spans]
    return _assign_fragments(source, pixels, fragments, numbers)


def _assign_fragments(
    source: _Source, pixels: _PixelData, fragments: list[bytes], numbers: list[int]
) -> dict[int, bytes]:
    count = pixels.number_of_frames
    if count == 1:
        return {1: b"".join(fragments)}
    if len(fragments) == count:
        return {number: fragments[number - 1] for number in set(numbers)}
    # More fragments than frames and no offset table: let pydicom find the frame boundaries (it looks
    # for each codec's end-of-image marker).
    buffer = _EMPTY_BASIC_OFFSET_TABLE + b"".join(
        struct.pack("<HHI", 0xFFFE, 0xE000, len(fragment)) + fragment for fragment in fragments
    )
    try:
        frames = list(generate_frames(buffer, number_of_frames=count))
    except Exception as exc:
        raise DamagedObject(
            f"stored object {source.key}: frames cannot be told apart in its fragments: {exc}"
        ) from exc
    if len(frames) != count:
        raise DamagedObject(
            f"stored object {source.key}: found {len(frames)} frames in its fragments, expected {count}"
        )
    return {number: bytes(frames[number - 1]) for number in set(numbers)}


# --- whole-object decoding (big endian, deflated) ---------------------------------------------------


def _decoded_whole_frames(source: _Source, pixels: _PixelData, numbers: list[int]) -> list[Frame]:
    try:
        dataset = pydicom.dcmread(io.BytesIO(source.read_all()))
    except Exception as exc:
        raise DamagedObject(
            f"stored object {source.key} cannot be read: {type(exc).__name__}: {exc}"
        ) from exc
    if not any(tag in dataset for tag in _PIXEL_TAGS):
        raise NotFound(f"instance {_uid_of(dataset)} has no pixel data")
    frames = []
    for number in numbers:
        try:
            values = pixel_array(dataset, index=number - 1, raw=True)
        except Exception as exc:
            raise DamagedObject(
                f"stored object {source.key}: frame {number} cannot be decoded: {exc}"
            ) from exc
        frames.append(
            Frame(number, _to_bytes(values, int(dataset.get("BitsAllocated", 8))), ExplicitVRLittleEndian)
        )
    return frames


def _to_bytes(values: np.ndarray, bits_allocated: int) -> bytes:
    if bits_allocated == 1:
        return bytes(pack_bits(values))
    return bytes(values.astype(values.dtype.newbyteorder("<"), copy=False).tobytes())


# --- public API -----------------------------------------------------------------------------------


def _open(store: ObjectStore, key: str, size: int) -> tuple[_Source, _PixelData]:
    source = _Source(store, key, size)
    return source, _locate(source)


def number_of_frames(store: ObjectStore, key: str, size: int) -> int:
    """Number of Frames of a stored instance with pixel data (1 when absent); NotFound without pixels."""
    _, pixels = _open(store, key, size)
    return pixels.number_of_frames


def read_frames(store: ObjectStore, key: str, size: int, numbers: Sequence[int]) -> list[Frame]:
    """The frames ``numbers`` (from 1, in the order asked) as stored: the compressed bitstream of each,
    or native pixel bytes in little-endian order. InvalidQuery for numbers below 1, NotFound beyond
    Number of Frames or without pixel data, DamagedObject when the object is cut short."""
    source, pixels = _open(store, key, size)
    checked = _check_numbers(numbers, pixels.number_of_frames)
    if pixels.transfer_syntax_uid in _DECODED_WHOLE:
        return _decoded_whole_frames(source, pixels, checked)
    if pixels.encapsulated:
        return _encapsulated_frames(source, pixels, checked)
    return _native_frames(source, pixels, checked)


def decode_frames(store: ObjectStore, key: str, size: int, numbers: Sequence[int]) -> list[Frame]:
    """The frames ``numbers`` as uncompressed little-endian pixel bytes (application/octet-stream,
    PS3.18 8.7.3.3.1), decoding only those frames. YBR JPEG frames come out RGB, as pydicom's
    ``Dataset.decompress`` (and so :func:`skypacs.imaging.transcode.transcode_dataset`) gives them."""
    source, pixels = _open(store, key, size)
    checked = _check_numbers(numbers, pixels.number_of_frames)
    if pixels.transfer_syntax_uid in _DECODED_WHOLE:
        return _decoded_whole_frames(source, pixels, checked)
    if not pixels.encapsulated:
        return _native_frames(source, pixels, checked)
    stored = _encapsulated_frames(source, pixels, checked)
    decoded: dict[int, Frame] = {}
    for frame in stored:
        if frame.number not in decoded:
            decoded[frame.number] = Frame(
                frame.number, decode_frame(frame, pixels.header), ExplicitVRLittleEndian
            )
    return [decoded[number] for number in checked]


def decoding_options(header: Dataset) -> dict[str, Any]:
    """The Image Pixel attributes a pydicom decoder needs to decode one frame on its own."""
    return {
        "rows": int(header.Rows),
        "columns": int(header.Columns),
        "samples_per_pixel": int(header.get("SamplesPerPixel", 1) or 1),
        "bits_allocated": int(header.BitsAllocated),
        "bits_stored": int(header.get("BitsStored", header.BitsAllocated)),
        "pixel_representation": int(header.get("PixelRepresentation", 0) or 0),
        "photometric_interpretation": str(header.get("PhotometricInterpretation", "MONOCHROME2")),
        "planar_configuration": int(header.get("PlanarConfiguration", 0) or 0),
        "number_of_frames": 1,
    }


def decode_frame_array(frame: Frame, header: Dataset, *, as_rgb: bool = True) -> np.ndarray:
    """One compressed frame decoded to an array (shape rows x columns [x samples])."""
    syntax = UID(frame.transfer_syntax_uid)
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise CannotTranscode(f"no decoder for {syntax.name} in this server") from None
    if not decoder.is_available:
        raise CannotTranscode(f"no decoder for {syntax.name} in this server")
    try:
        options: dict[str, Any] = {
            **decoding_options(header),
            "transfer_syntax_uid": syntax,
            "as_rgb": as_rgb,
        }
        values, _ = decoder.as_array(encapsulate([frame.data]), **options)
    except Exception as exc:
        raise DamagedObject(
            f"frame {frame.number} of {_uid_of(header)} cannot be decoded from {syntax.name}: {exc}"
        ) from exc
    return values


def decode_frame(frame: Frame, header: Dataset) -> bytes:
    """One compressed frame as uncompressed little-endian pixel bytes."""
    return _to_bytes(decode_frame_array(frame, header), int(header.BitsAllocated))
