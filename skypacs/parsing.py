"""Read and validate the header of a stored DICOM object, touching as few bytes as possible.

Ingest never decodes pixels: it reads the Part 10 header up to Pixel Data, through a lazy reader that
fetches fixed blocks from the ObjectStore on demand (one ranged GET covers a typical CT/MR header), and
defers large values so that an encapsulated PDF or a long waveform is skipped, not downloaded.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from skypacs.errors import MissingAttribute, NotDicom, UnsupportedSOPClass
from skypacs.keys import instance_key
from skypacs.model import dataset_to_dicom_json, first_value, raw_elements
from skypacs.ports import DicomJson, ObjectStore
from skypacs.sop_classes import is_storage_sop_class
from skypacs.uids import check_uid

BLOCK_SIZE = 64 * 1024
DEFER_SIZE = 64 * 1024
"""Values larger than this are not read at ingest: they become BulkDataURI references."""

TAIL_SEARCH = 4096
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}


class RangedReader(io.RawIOBase):
    """A seekable read-only stream over one object that fetches ``BLOCK_SIZE`` blocks lazily."""

    def __init__(self, store: ObjectStore, key: str, size: int) -> None:
        super().__init__()
        self._store, self._key, self._size = store, key, size
        self.name = key  # pydicom records ``name`` as the dataset's filename
        self._blocks: dict[int, bytes] = {}
        self._pos = 0
        self.bytes_fetched = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _block(self, index: int) -> bytes:
        block = self._blocks.get(index)
        if block is None:
            block = self._store.read_range(self._key, index * BLOCK_SIZE, BLOCK_SIZE)
            self.bytes_fetched += len(block)
            self._blocks[index] = block
        return block

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self._size - self._pos)
        done = 0
        while done < wanted:
            index, offset = divmod(self._pos, BLOCK_SIZE)
            block = self._block(index)
            chunk = block[offset : offset + wanted - done]
            if not chunk:
                break
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
            self._pos += len(chunk)
        return done


@dataclass(frozen=True)
class InstanceIdentity:
    """What the archive files an instance under, validated: enough for an edge to accept it."""

    StudyInstanceUID: str
    SeriesInstanceUID: str
    SOPInstanceUID: str
    SOPClassUID: str
    TransferSyntaxUID: str

    @property
    def key(self) -> str:
        return instance_key(self.StudyInstanceUID, self.SeriesInstanceUID, self.SOPInstanceUID)


@dataclass(frozen=True)
class ParsedInstance(InstanceIdentity):
    """The identity plus the DICOM JSON metadata ingest catalogs and indexes."""

    PatientID: str
    metadata: DicomJson


def read_header(stream: BinaryIO, size: int | None = None) -> Dataset:
    """Parse the Part 10 header up to Pixel Data; raise :class:`NotDicom` on anything undecodable.

    When ``size`` is known, also check that the object is not cut short inside Pixel Data, which a
    header-only read would otherwise miss (a truncated transfer must not be archived as complete).
    """
    try:
        dataset = pydicom.dcmread(stream, stop_before_pixels=True, defer_size=DEFER_SIZE)
    except InvalidDicomError as exc:
        raise NotDicom(f"not a DICOM Part 10 object: {exc}") from exc
    except Exception as exc:  # pydicom raises many types on corrupt input; all mean the same here
        raise NotDicom(f"cannot decode DICOM header: {type(exc).__name__}: {exc}") from exc
    if not isinstance(dataset, pydicom.FileDataset) or not dataset.file_meta:
        raise NotDicom("not a DICOM Part 10 object: no file meta information")
    if size is not None:
        _check_not_truncated(dataset, stream, size)
    return dataset


def _check_not_truncated(dataset: Dataset, stream: BinaryIO, size: int) -> None:
    transfer_syntax = UID(dataset.file_meta.get("TransferSyntaxUID", ""))
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        return  # positions are in the inflated stream; a cut deflate stream fails to inflate instead
    for raw in raw_elements(dataset):
        # pydicom reads a value cut short by the end of the object without complaint; catch it here.
        value_tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
        if value_tell is not None and length is not None and length != 0xFFFFFFFF and value_tell + length > size:
            raise NotDicom(
                f"object truncated: element ({raw.tag.group:04X},{raw.tag.element:04X}) needs "
                f"{value_tell + length} bytes, object has {size}"
            )
    position = stream.tell()
    if position >= size:
        return  # no Pixel Data: the header read consumed the whole object
    head = _read_at(stream, position, 12)
    if len(head) < 8:
        raise NotDicom(f"object truncated: {size} bytes, ends inside an element header at {position}")
    little = transfer_syntax != "1.2.840.10008.1.2.2"
    group, element = struct.unpack("<HH" if little else ">HH", head[:4])
    if (group << 16 | element) not in _PIXEL_TAGS:
        return
    implicit = transfer_syntax == "1.2.840.10008.1.2"
    if implicit:
        (length,) = struct.unpack("<I", head[4:8])
        header_length = 8
    else:
        if len(head) < 12:
            raise NotDicom(f"object truncated: {size} bytes, ends inside the Pixel Data header")
        (length,) = struct.unpack("<I" if little else ">I", head[8:12])
        header_length = 12
    if length == 0xFFFFFFFF:
        # The fragments end with a Sequence Delimitation Item; usually the object's last 8 bytes, but
        # a few writers append elements after Pixel Data, so look in the tail rather than exactly there.
        tail_start = max(position + header_length, size - TAIL_SEARCH)
        if _SEQUENCE_DELIMITER not in _read_at(stream, tail_start, size - tail_start):
            raise NotDicom(
                f"object truncated: encapsulated Pixel Data has no sequence delimiter near the end "
                f"of its {size} bytes"
            )
    elif position + header_length + length > size:
        raise NotDicom(
            f"object truncated: Pixel Data needs {position + header_length + length} bytes, "
            f"object has {size}"
        )


def _read_at(stream: BinaryIO, offset: int, length: int) -> bytes:
    stream.seek(offset)
    return stream.read(length)


def identify(dataset: Dataset, *, extra_sop_classes: frozenset[str] = frozenset()) -> InstanceIdentity:
    """Validate what the archive keys on, without converting the rest of the header.

    Rejects (typed, with a reason code) what cannot be archived correctly: missing or malformed
    Study/Series/SOP Instance UIDs and SOP Class UID, and SOP classes that are not storage classes
    (unless configured in ``extra_sop_classes``). A file meta MediaStorageSOPInstanceUID that disagrees
    with the dataset is common in real files (rtplan.dcm in pydicom's own test data); the dataset's
    SOPInstanceUID is authoritative (PS3.10 7.1).
    """
    values: dict[str, str] = {}
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        raw = dataset.get(keyword)
        value = str(raw).strip() if raw is not None else ""
        if not value:
            raise MissingAttribute(f"{keyword} is missing or empty", reason="missing-attribute")
        values[keyword] = check_uid(keyword, value)
    transfer_syntax = str(dataset.file_meta.get("TransferSyntaxUID", "")).strip()
    if not transfer_syntax:
        raise MissingAttribute("file meta TransferSyntaxUID is missing")
    check_uid("TransferSyntaxUID", transfer_syntax)
    sop_class = values["SOPClassUID"]
    if not (is_storage_sop_class(sop_class) or sop_class in extra_sop_classes):
        raise UnsupportedSOPClass(
            f"SOPClassUID {sop_class} is not a storage SOP class this archive accepts "
            f"(add it to dimse.extra_sop_classes to accept it)"
        )
    return InstanceIdentity(
        StudyInstanceUID=values["StudyInstanceUID"],
        SeriesInstanceUID=values["SeriesInstanceUID"],
        SOPInstanceUID=values["SOPInstanceUID"],
        SOPClassUID=sop_class,
        TransferSyntaxUID=transfer_syntax,
    )


def parse_instance(
    dataset: Dataset, *, extra_sop_classes: frozenset[str] = frozenset()
) -> ParsedInstance:
    """:func:`identify`, then convert the header to DICOM JSON for the catalog and the index."""
    identity = identify(dataset, extra_sop_classes=extra_sop_classes)
    metadata = dataset_to_dicom_json(dataset)
    patient_id = first_value(metadata, "PatientID")
    return ParsedInstance(
        **{field: getattr(identity, field) for field in InstanceIdentity.__dataclass_fields__},
        PatientID=str(patient_id) if patient_id is not None else "",
        metadata=metadata,
    )


def parse_stored_object(
    store: ObjectStore, key: str, size: int, *, extra_sop_classes: frozenset[str] = frozenset()
) -> ParsedInstance:
    """Header-only parse of an object already in the store (ranged reads, see :class:`RangedReader`)."""
    reader = io.BufferedReader(RangedReader(store, key, size), buffer_size=8192)
    return parse_instance(read_header(reader, size), extra_sop_classes=extra_sop_classes)


def parse_bytes(data: bytes, *, extra_sop_classes: frozenset[str] = frozenset()) -> ParsedInstance:
    """Parse and validate a whole object held in memory, metadata included (import)."""
    return parse_instance(read_header(io.BytesIO(data), len(data)), extra_sop_classes=extra_sop_classes)


def identify_bytes(data: bytes, *, extra_sop_classes: frozenset[str] = frozenset()) -> InstanceIdentity:
    """Validate a whole object held in memory, cheaply: the edges' check before they store (C-STORE,
    STOW), which must not pay for the metadata conversion that ingest does anyway."""
    return identify(read_header(io.BytesIO(data), len(data)), extra_sop_classes=extra_sop_classes)
