"""The retrieve service: what WADO-RS routes call (C-MOVE/C-GET select instances in
:mod:`skypacs.services.retrieve_selection` and send them through the same store).

Retrieval reads the Catalog (which instances, where, in which transfer syntax) and then the
ObjectStore; the QueryIndex is never involved, so a retrieve is exact even while indexing lags.
Metadata comes from the catalog records computed once at ingest: a series' metadata is one range read
of the catalog, whatever the series size, never a read of every object.

A stored object that cannot be read back as the catalog describes it (missing, shorter or longer than
recorded) is a :class:`~skypacs.errors.DamagedObject`: logged with the instance's UIDs and key, and
raised in the middle of a streamed body, so the HTTP adapter aborts the connection instead of ending the
multipart body as if it were complete.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

import pydicom
from pydicom.tag import Tag

from skypacs.errors import DamagedObject, InvalidQuery, NotFound, SkyPacsError
from skypacs.imaging import frames as imaging_frames
from skypacs.imaging import render as imaging_render
from skypacs.imaging.transcode import transcode_part10
from skypacs.ports import Catalog, DicomJson, InstanceRecord, ObjectStore

if TYPE_CHECKING:
    from skypacs.imaging.frames import Frame
    from skypacs.imaging.render import RenderOptions

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
"""Bytes read from the ObjectStore per body chunk of a streamed retrieve."""
AVAILABLE_TRANSFER_SYNTAX = "00083002"
"""Available Transfer Syntax UID (PS3.3 C.12.1): the stored syntax, in metadata responses, so a viewer
knows what ``transfer-syntax=*`` frames will be in."""
BULKDATA_SEPARATOR = "."
"""Tag paths in BulkDataURIs join tags and item numbers with dots (``00081111.1.00091001``): one path
segment, which API Gateway and Chalice can route (neither has greedy path parameters)."""


class RetrieveService:
    def __init__(self, catalog: Catalog, store: ObjectStore) -> None:
        self.catalog = catalog
        self.store = store

    # --- which instances ------------------------------------------------------------------------

    def instances(self, study_instance_uid: str, series_instance_uid: str | None = None, *,
                  with_metadata: bool = True) -> list[InstanceRecord]:
        """The instances of a study or series, in series then SOP Instance UID order; NotFound if none.
        ``with_metadata=False`` for retrieval, which needs keys and sizes only."""
        records = list(self.catalog.list_instances(study_instance_uid, series_instance_uid,
                                                   with_metadata=with_metadata))
        if not records:
            what = "series" if series_instance_uid else "study"
            raise NotFound(f"no such {what}: {series_instance_uid or study_instance_uid}")
        return records

    def instance(self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str) -> InstanceRecord:
        record = self.catalog.get_instance(sop_instance_uid)
        if (
            record is None
            or record.StudyInstanceUID != study_instance_uid
            or record.SeriesInstanceUID != series_instance_uid
        ):
            raise NotFound(f"no such instance: {sop_instance_uid} in series {series_instance_uid}")
        return record

    # --- whole objects --------------------------------------------------------------------------

    def stream(self, record: InstanceRecord, *, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The stored bytes, chunk by chunk, checked against the size the catalog recorded."""
        stream = self._open(record)
        sent = 0
        try:
            while True:
                try:
                    chunk = stream.read(chunk_size)
                except SkyPacsError as exc:
                    raise self._damaged(record, f"read failed after {sent} bytes: {exc}") from exc
                if not chunk:
                    break
                sent += len(chunk)
                if sent > record.size:
                    raise self._damaged(record, f"object is longer than the {record.size} bytes cataloged")
                yield chunk
        finally:
            stream.close()
        if sent != record.size:
            raise self._damaged(record, f"object has {sent} bytes, the catalog recorded {record.size}")

    def read(self, record: InstanceRecord) -> bytes:
        return b"".join(self.stream(record))

    def part10(self, record: InstanceRecord, transfer_syntax_uid: str) -> Iterator[bytes]:
        """The object in ``transfer_syntax_uid``: streamed as stored when it already is, else
        transcoded whole (one instance at a time, so memory stays bounded by the largest instance).
        Raises CannotTranscode (406) before the first chunk when no codec can do it."""
        if transfer_syntax_uid == record.TransferSyntaxUID:
            return self.stream(record)
        transcoded = self._transcode(record, transfer_syntax_uid)
        return iter((transcoded,))

    def _transcode(self, record: InstanceRecord, transfer_syntax_uid: str) -> bytes:
        data = self.read(record)
        try:
            return transcode_part10(data, transfer_syntax_uid)
        except DamagedObject:
            logger.error("stored object %s (instance %s) cannot be decoded for transcoding to %s",
                         record.key, record.SOPInstanceUID, transfer_syntax_uid)
            raise

    def _open(self, record: InstanceRecord) -> BinaryIO:
        try:
            return self.store.open(record.key)
        except NotFound as exc:
            raise self._damaged(record, "object is missing from the object store") from exc

    def _damaged(self, record: InstanceRecord, problem: str) -> DamagedObject:
        logger.error("damaged stored object %s (study %s, series %s, instance %s): %s", record.key,
                     record.StudyInstanceUID, record.SeriesInstanceUID, record.SOPInstanceUID, problem)
        return DamagedObject(f"stored instance {record.SOPInstanceUID} cannot be read back")

    # --- metadata -------------------------------------------------------------------------------

    def metadata(self, records: Sequence[InstanceRecord], base_url: str) -> list[DicomJson]:
        """Each instance's DICOM JSON with absolute BulkDataURIs under ``base_url`` (the DICOMweb root
        as the client addressed it) and the stored transfer syntax as Available Transfer Syntax UID."""
        return [instance_metadata(record, base_url) for record in records]

    # --- bulk data ------------------------------------------------------------------------------

    def bulk_value(self, record: InstanceRecord, tag_path: str) -> bytes:
        """The value of the attribute a BulkDataURI names, read from the stored object (a ranged
        read of its header on object stores that support it, not the whole object)."""
        path = parse_tag_path(tag_path)
        if path[-1] in PIXEL_DATA_TAGS and len(path) == 1:
            raise InvalidQuery("Pixel Data is retrieved by frame: use .../frames/{numbers}")
        dataset = self._dataset(record)
        current: Any = dataset
        element: Any = None
        try:
            for position, step in enumerate(path):
                if position % 2 == 0:
                    element = current[step]
                else:
                    current = element.value[step - 1]
        except (KeyError, IndexError, TypeError):
            raise NotFound(f"instance {record.SOPInstanceUID} has no attribute at {tag_path}") from None
        value = getattr(element, "value", None)
        if isinstance(value, bytes):
            return value
        if value is None:
            return b""
        raise NotFound(f"attribute at {tag_path} is not bulk data")

    def _dataset(self, record: InstanceRecord) -> pydicom.Dataset:
        from skypacs.parsing import RangedReader

        reader = RangedReader(self.store, record.key, record.size)
        try:
            return pydicom.dcmread(reader, stop_before_pixels=True)
        except Exception as exc:
            raise self._damaged(record, f"header cannot be decoded: {type(exc).__name__}") from exc

    # --- frames and rendering -------------------------------------------------------------------

    def frames(self, record: InstanceRecord, numbers: Sequence[int], *, decode: bool) -> list[Frame]:
        """Frames as stored (``decode=False``) or as uncompressed little-endian pixels."""
        read = imaging_frames.decode_frames if decode else imaging_frames.read_frames
        try:
            return read(self.store, record.key, record.size, numbers)
        except DamagedObject:
            logger.error("frames of stored object %s (instance %s) cannot be read", record.key,
                         record.SOPInstanceUID)
            raise

    def rendered(self, record: InstanceRecord, frame_number: int | None, media_type: str,
                 options: RenderOptions) -> bytes:
        with self._open(record) as stream:
            return imaging_render.render(stream, frame_number, media_type, options)

    def thumbnail(self, record: InstanceRecord, media_type: str, options: RenderOptions | None,
                  frame_number: int | None = None) -> bytes:
        with self._open(record) as stream:
            return imaging_render.thumbnail(stream, media_type, options, frame_number)


PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})


def parse_tag_path(tag_path: str) -> list[int]:
    """``00081111.1.00091001`` (or with ``/``) -> [tag, item number, tag]: tags are 8 hex digits at
    even positions, item numbers (1-based) between them."""
    parts = [part for part in tag_path.replace("/", BULKDATA_SEPARATOR).split(BULKDATA_SEPARATOR) if part]
    if not parts or len(parts) % 2 == 0:
        raise InvalidQuery(f"not a bulk data path: {tag_path!r}")
    path: list[int] = []
    for position, part in enumerate(parts):
        if position % 2 == 0:
            if len(part) != 8:
                raise InvalidQuery(f"not a tag in a bulk data path: {part!r}")
            try:
                path.append(int(Tag(int(part, 16))))
            except ValueError:
                raise InvalidQuery(f"not a tag in a bulk data path: {part!r}") from None
        else:
            if not part.isdigit() or int(part) < 1:
                raise InvalidQuery(f"not an item number in a bulk data path: {part!r}")
            path.append(int(part))
    return path


def instance_url(base_url: str, record: InstanceRecord) -> str:
    return (f"{base_url.rstrip('/')}/studies/{record.StudyInstanceUID}/series/{record.SeriesInstanceUID}"
            f"/instances/{record.SOPInstanceUID}")


def instance_metadata(record: InstanceRecord, base_url: str) -> DicomJson:
    prefix = instance_url(base_url, record) + "/"
    metadata = _absolute_bulk_uris(record.metadata, prefix)
    metadata[AVAILABLE_TRANSFER_SYNTAX] = {"vr": "UI", "Value": [record.TransferSyntaxUID]}
    if has_pixel_data(record) and PIXEL_DATA not in metadata:
        # Ingest reads headers only, up to Pixel Data; an image's Pixel Data is there, by reference.
        metadata[PIXEL_DATA] = {"vr": _pixel_data_vr(record), "BulkDataURI": f"{prefix}bulkdata/{PIXEL_DATA}"}
    return dict(sorted(metadata.items()))


PIXEL_DATA = "7FE00010"
ROWS, BITS_ALLOCATED = "00280010", "00280100"


def has_pixel_data(record: InstanceRecord) -> bool:
    """Whether the instance is an image: Rows is present exactly when the Image Pixel module is
    (ingest stops reading before Pixel Data, so the element itself is not in the metadata)."""
    return bool(record.metadata.get(ROWS, {}).get("Value")) or PIXEL_DATA in record.metadata


def _pixel_data_vr(record: InstanceRecord) -> str:
    """OW for native pixels of more than 8 bits, OB otherwise (PS3.5 8.2, A.4)."""
    from pydicom.uid import UID

    bits = (record.metadata.get(BITS_ALLOCATED, {}).get("Value") or [8])[0]
    compressed = UID(record.TransferSyntaxUID).is_compressed
    return "OW" if not compressed and isinstance(bits, int) and bits > 8 else "OB"


def _absolute_bulk_uris(metadata: DicomJson, prefix: str) -> DicomJson:
    """A copy with each relative ``bulkdata/{path}`` URI made absolute; elements without bulk data are
    shared, not copied (the catalog record is not modified)."""
    result: DicomJson = {}
    for tag, element in metadata.items():
        uri = element.get("BulkDataURI")
        if uri is not None and not uri.startswith(("http://", "https://")):
            relative = uri.split("/", 1)
            path = relative[1].replace("/", BULKDATA_SEPARATOR) if len(relative) == 2 else relative[0]
            element = {**element, "BulkDataURI": f"{prefix}bulkdata/{path}"}
        elif element.get("vr") == "SQ" and element.get("Value"):
            element = {**element, "Value": [_absolute_bulk_uris(item, prefix) for item in element["Value"]]}
        result[tag] = element
    return result


__all__ = ["RetrieveService", "instance_metadata", "parse_tag_path"]
