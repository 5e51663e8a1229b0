"""Give a stored object in another transfer syntax (WADO-RS ``transfer-syntax``, C-MOVE/C-GET contexts).

Everything goes through pydicom 3's own pixel machinery (``pydicom.pixels`` decoders and encoders,
``Dataset.decompress``/``Dataset.compress``): the archive has no codecs of its own.

Policy, decided once here:

- The archive never throws away image information on its own: a lossy target syntax is only served
  when it also permits a lossless bitstream. JPEG 2000 (``.4.91``) is encoded reversibly (a lossless
  J2K codestream is valid under ``.4.91``, PS3.5 A.4.4) and JPEG-LS Near-Lossless (``.4.81``) with
  NEAR=0 (PS3.5 A.4.3). JPEG Baseline/Extended/Lossless, HTJ2K, MPEG and HEVC have no encoder in
  pydicom 3, so they are refused with :class:`CannotTranscode` (406 in WADO-RS, PS3.18 8.7.3.5).
- A bitstream that is already valid in the target syntax is relabelled, not re-encoded (JPEG Lossless
  SV1 under JPEG Lossless, lossless J2K under J2K, lossless JPEG-LS under near-lossless, ...).
- The SOP Instance UID is kept: nothing here is lossy, so the instance stays the same instance
  (PS3.4 C.4.2.1.4.1 allows lossless transfer syntax changes without a new UID). Decompressing a
  lossy source keeps (or sets) Lossy Image Compression "01" (PS3.3 C.7.6.1.1.5).
- Datasets without Pixel Data (SR, RT plan, waveform) only change their encoding.
"""

from __future__ import annotations

import io
import logging
from typing import Any, BinaryIO, Literal

import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
from pydicom.pixels.utils import pack_bits, pixel_array
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
)

from skypacs.errors import CannotTranscode, DamagedObject
from skypacs.imaging.media_types import NATIVE_TRANSFER_SYNTAXES

log = logging.getLogger(__name__)

RELABEL = {
    # source bitstream -> the syntaxes it is also a valid bitstream of (PS3.5 A.4)
    JPEGLosslessSV1: frozenset({JPEGLossless}),
    JPEG2000Lossless: frozenset({JPEG2000}),
    JPEGLSLossless: frozenset({JPEGLSNearLossless}),
    HTJ2KLossless: frozenset({HTJ2K}),
    HTJ2KLosslessRPCL: frozenset({HTJ2KLossless, HTJ2K}),
}
"""Changes that need no decoding: the stored fragments are served as they are, under the target UID."""

_ENCODE_AS = {JPEG2000: JPEG2000Lossless}
"""Targets encoded with another syntax's encoder, then relabelled (see the module docstring)."""

_ALWAYS_LOSSY = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit})

_PIXEL_DATA = 0x7FE00010
_FLOAT_PIXEL_DATA = (0x7FE00008, 0x7FE00009)
_SWAP_UNIT = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _name(uid: str) -> str:
    name = UID(uid).name
    return f"{name} ({uid})" if name != uid else uid


def _can_decode(uid: UID) -> bool:
    if uid in NATIVE_TRANSFER_SYNTAXES:
        return True
    try:
        return bool(get_decoder(uid).is_available)
    except NotImplementedError:  # pydicom knows no decoder for this syntax at all (MPEG, HEVC, ...)
        return False


def _can_encode(uid: UID) -> bool:
    if uid in NATIVE_TRANSFER_SYNTAXES:
        return True
    try:
        return bool(get_encoder(_ENCODE_AS.get(uid, uid)).is_available)
    except NotImplementedError:
        return False


def can_transcode(source_uid: str, target_uid: str) -> bool:
    """Whether an object with pixel data in ``source_uid`` can be given in ``target_uid``, from the UIDs
    alone (cheap: for choosing presentation contexts and answering 406 before reading anything).

    An object may still fail later if its pixel data does not fit the target encoder (e.g. 32-bit
    samples in JPEG-LS); objects without pixel data can always change syntax.
    """
    source, target = UID(source_uid), UID(target_uid)
    if source == target or target in RELABEL.get(source, frozenset()):
        return True
    return _can_decode(source) and _can_encode(target)


def _refusal(source: UID, target: UID) -> str:
    if not _can_decode(source):
        return f"no decoder for {_name(source)} in this server"
    return f"no encoder for {_name(target)} in this server"


def _has_float_pixel_data(dataset: Dataset) -> bool:
    return any(tag in dataset for tag in _FLOAT_PIXEL_DATA)


def transcode_dataset(dataset: Dataset, target_uid: str) -> Dataset:
    """``dataset`` (with ``file_meta``) with its pixel data and Transfer Syntax UID in ``target_uid``.

    Modifies ``dataset`` in place and returns it. Raises :class:`CannotTranscode` when the server has
    no codec for the change (or the pixel data does not fit the target encoder), and
    :class:`DamagedObject` when the stored pixel data cannot be decoded.
    """
    if not hasattr(dataset, "file_meta"):
        dataset.file_meta = FileMetaDataset()
    source = UID(str(dataset.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)))
    target = UID(target_uid)
    if source == target:
        return dataset
    if not target.is_transfer_syntax:
        raise CannotTranscode(f"{target_uid} is not a transfer syntax this server knows")
    if _PIXEL_DATA not in dataset:
        if target.is_compressed and _has_float_pixel_data(dataset):
            raise CannotTranscode(f"float pixel data cannot be encoded as {_name(target)}")
        if source == ExplicitVRBigEndian or target == ExplicitVRBigEndian:
            _swap_binary_values(dataset)
        return _set_syntax(dataset, target)
    if target in RELABEL.get(source, frozenset()):
        return _set_syntax(dataset, target)
    if not (_can_decode(source) and _can_encode(target)):
        raise CannotTranscode(_refusal(source, target))

    if source.is_compressed:
        _decompress(dataset, source)
    elif source == ExplicitVRBigEndian:
        _native_to_little_endian(dataset)
    # From here on the pixel data are native little endian, whatever the label says.
    if target.is_compressed:
        _compress(dataset, target)
    elif target == ExplicitVRBigEndian:
        _native_to_big_endian(dataset)
    log.debug("transcoded %s from %s to %s", dataset.get("SOPInstanceUID", "?"), source, target)
    return _set_syntax(dataset, target)


def _set_syntax(dataset: Dataset, target: UID) -> Dataset:
    # The original encoding is left as read: pydicom's writers compare it with the target's to decide
    # whether raw elements may be copied as they are or must be re-encoded.
    dataset.file_meta.TransferSyntaxUID = target
    return dataset


def _decompress(dataset: Dataset, source: UID) -> None:
    try:
        # as_rgb: YBR JPEG comes out RGB and Photometric Interpretation/Planar Configuration follow.
        dataset.decompress(as_rgb=True, generate_instance_uid=False)
    except Exception as exc:  # the decoders raise ValueError, RuntimeError, OSError... on bad input
        raise DamagedObject(
            f"cannot decode {_name(source)} pixel data of {dataset.get('SOPInstanceUID', '?')}: {exc}"
        ) from exc
    if source in _ALWAYS_LOSSY:
        dataset.LossyImageCompression = "01"


def _compress(dataset: Dataset, target: UID) -> None:
    if _has_float_pixel_data(dataset):
        raise CannotTranscode(f"float pixel data cannot be encoded as {_name(target)}")
    encode_as = _ENCODE_AS.get(target, target)
    options: dict[str, Any] = {}
    if encode_as == JPEGLSNearLossless:
        options["jls_error"] = 0
    try:
        dataset.compress(encode_as, generate_instance_uid=False, **options)
    except Exception as exc:  # the encoders refuse unsupported bit depths etc. with ValueError
        raise CannotTranscode(f"pixel data cannot be encoded as {_name(target)}: {exc}") from exc


def _pixel_bytes(values: np.ndarray, bits_allocated: int, byte_order: Literal["<", ">"]) -> bytes:
    if bits_allocated == 1:
        return bytes(pack_bits(values))
    if bits_allocated == 8:
        data = values.astype(np.uint8 if values.dtype.kind == "u" else np.int8).tobytes()
    else:
        data = values.astype(values.dtype.newbyteorder(byte_order)).tobytes()
    return data + b"\x00" if len(data) % 2 else data


def _native_to_little_endian(dataset: Dataset) -> None:
    _swap_binary_values(dataset)
    _rewrite_native_pixels(dataset, "<")


def _native_to_big_endian(dataset: Dataset) -> None:
    _swap_binary_values(dataset)
    _rewrite_native_pixels(dataset, ">")


def _rewrite_native_pixels(dataset: Dataset, byte_order: Literal["<", ">"]) -> None:
    """Re-encode native Pixel Data in ``byte_order`` from pydicom's decode of it (raw: no colour
    conversion), so that 8-bit OW, 1-bit packing and 32-bit samples all come out right."""
    try:
        values = pixel_array(dataset, raw=True)
    except Exception as exc:
        raise DamagedObject(f"cannot read pixel data of {dataset.get('SOPInstanceUID', '?')}: {exc}") from exc
    bits_allocated = int(dataset.BitsAllocated)
    element = dataset[_PIXEL_DATA]
    element.value = _pixel_bytes(values, bits_allocated, byte_order)
    element.VR = "OB" if bits_allocated <= 8 else "OW"
    dataset._pixel_array = None
    dataset._pixel_id = {}


def _swap_binary_values(dataset: Dataset) -> None:
    """Swap the byte order of OW/OF/OL/OD/OV values other than Pixel Data, recursively: pydicom
    converts numbers on write but leaves binary values as they are (see ``pydicom.dcmwrite``)."""
    for element in list(dataset.elements()):
        if isinstance(element, DataElement) and element.VR == "SQ":
            for item in element.value or []:
                _swap_binary_values(item)
            continue
        if element.tag == _PIXEL_DATA:
            continue
        element = dataset[element.tag]
        unit = _SWAP_UNIT.get(str(element.VR))
        value = element.value
        if unit and isinstance(value, bytes | bytearray) and len(value) % unit == 0 and value:
            element.value = np.frombuffer(value, dtype=f"u{unit}").byteswap().tobytes()


def read_part10(data: bytes | BinaryIO) -> Dataset:
    """Parse a whole Part 10 object; undecodable bytes are a damaged stored object."""
    stream = io.BytesIO(data) if isinstance(data, bytes | bytearray | memoryview) else data
    try:
        return pydicom.dcmread(stream, force=False)
    except Exception as exc:
        raise DamagedObject(f"stored object cannot be parsed: {type(exc).__name__}: {exc}") from exc


def write_part10(dataset: Dataset) -> bytes:
    """Encode ``dataset`` as a Part 10 object in its file meta's transfer syntax."""
    out = io.BytesIO()
    # dcmwrite, not save_as: save_as refuses little <-> big endian changes, which _swap_binary_values
    # and _rewrite_native_pixels have already made correct.
    pydicom.dcmwrite(out, dataset, enforce_file_format=True)
    return out.getvalue()


def _transfer_syntax_of(data: bytes) -> str | None:
    """The file meta's Transfer Syntax UID, read without decoding the dataset."""
    try:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, defer_size=256)
    except Exception:  # noqa: BLE001 - unreadable here means "not already in the target": parse it fully
        return None
    value = header.file_meta.get("TransferSyntaxUID") if hasattr(header, "file_meta") else None
    return str(value) if value else None


def transcode_part10(data: bytes | BinaryIO, target_uid: str) -> bytes:
    """Part 10 bytes in ``target_uid``; the very same bytes when they already are."""
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        raw = data.read()
    if _transfer_syntax_of(raw) == UID(target_uid):
        return raw
    return write_part10(transcode_dataset(read_part10(raw), target_uid))
