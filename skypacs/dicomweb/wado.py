"""WADO-RS: retrieve studies, series, instances, metadata, frames, bulk data, rendered images and
thumbnails (PS3.18 8.7 and 10.4).

Negotiation follows PS3.18 8.7.3 and what real clients send:

- instances (study, series, instance): ``multipart/related; type="application/dicom"`` with an
  optional ``transfer-syntax`` parameter; ``*`` means as stored. With no transfer syntax (and for
  ``*/*`` or no Accept) the default is Explicit VR Little Endian (PS3.18 Table 8.7.3-5): an object stored
  compressed is decompressed, which is what ``dicomweb-client``'s ``retrieve_study()`` asks for by
  default. Each instance gets the first acceptable syntax (by q) that it is stored in or can be
  transcoded to; if any instance can get none, 406 before any byte is sent. ``application/dicom``
  (single part, no multipart envelope) is served for a single instance, for curl-style downloads;
- frames: ``multipart/related; type="application/octet-stream"`` — uncompressed pixels by default,
  the stored bitstream with ``transfer-syntax=*`` (what OHIF asks for; each part then says its
  ``transfer-syntax``), or the compressed media type of the stored syntax (``image/jpeg``,
  ``image/jls``, ``image/jp2``, ``image/dicom-rle``...);
- metadata: ``application/dicom+json`` (``application/json``); BulkDataURIs are absolute URLs of the
  bulk data resource of the instance;
- rendered and thumbnail: ``image/jpeg`` (default), ``image/png``, ``image/gif``.

Study and series bodies are streamed instance by instance; objects sent as stored also stream in
1 MB chunks with an exact Content-Length. On AWS, the Chalice adapter sends study and series
retrieval, and any answer over the Lambda limit, to the streaming service instead (see
``functions/dicomweb/app.py`` and :mod:`skypacs.dicomweb.signed_urls`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from skypacs.dicomweb import multipart
from skypacs.dicomweb.http import (
    DICOM_JSON,
    JSON,
    NotAcceptable,
    Request,
    Response,
    Route,
    accept_value,
    json_response,
    negotiate,
    parse_accept,
)
from skypacs.dicomweb.qido import path_uid
from skypacs.errors import InvalidQuery
from skypacs.imaging.media_types import frame_media_type
from skypacs.imaging.render import RENDERED_MEDIA_TYPES, RenderOptions
from skypacs.imaging.transcode import can_transcode
from skypacs.services.retrieve import has_pixel_data

if TYPE_CHECKING:
    from skypacs.ports import InstanceRecord
    from skypacs.services.retrieve import RetrieveService

DICOM = "application/dicom"
OCTET_STREAM = "application/octet-stream"
ANY_SYNTAX = "*"
LITTLE_ENDIAN_NATIVE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
"""Stored syntaxes whose native frames are already the bytes of an uncompressed little-endian frame."""
MAX_FRAMES_PER_REQUEST = 10_000

STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"
FRAMES = INSTANCE + "/frames/{frames}"

XML_NOTE = 'The XML metadata (multipart/related; type="application/dicom+xml") is not supported.'


def routes(service: RetrieveService) -> list[Route]:
    """The WADO-RS routes, bound to ``service``."""

    def bind(handler: Callable[..., Response]) -> Callable[[Request, Mapping[str, str]], Response]:
        return partial(handler, service)

    return [
        Route("GET", STUDY, bind(retrieve_instances), "wado-study"),
        Route("GET", SERIES, bind(retrieve_instances), "wado-series"),
        Route("GET", INSTANCE, bind(retrieve_instances), "wado-instance"),
        Route("GET", STUDY + "/metadata", bind(retrieve_metadata), "wado-study-metadata"),
        Route("GET", SERIES + "/metadata", bind(retrieve_metadata), "wado-series-metadata"),
        Route("GET", INSTANCE + "/metadata", bind(retrieve_metadata), "wado-instance-metadata"),
        Route("GET", FRAMES, bind(retrieve_frames), "wado-frames"),
        Route("GET", INSTANCE + "/bulkdata/{path}", bind(retrieve_bulkdata), "wado-bulkdata"),
        Route("GET", INSTANCE + "/rendered", bind(retrieve_rendered), "wado-instance-rendered"),
        Route("GET", FRAMES + "/rendered", bind(retrieve_rendered), "wado-frames-rendered"),
        Route("GET", STUDY + "/thumbnail", bind(retrieve_thumbnail), "wado-study-thumbnail"),
        Route("GET", SERIES + "/thumbnail", bind(retrieve_thumbnail), "wado-series-thumbnail"),
        Route("GET", INSTANCE + "/thumbnail", bind(retrieve_thumbnail), "wado-instance-thumbnail"),
        Route("GET", FRAMES + "/thumbnail", bind(retrieve_thumbnail), "wado-frames-thumbnail"),
    ]


STREAMED_ROUTES = frozenset({"wado-study", "wado-series"})
"""Routes whose answers are unbounded in size (whole studies and series): on AWS they never run in
Lambda but go to the streaming service."""


# --- instances ----------------------------------------------------------------------------------------

def retrieve_instances(service: RetrieveService, request: Request, params: Mapping[str, str]) -> Response:
    study, series, sop = _uids(params)
    single_instance = sop is not None
    multipart_wanted, choices = dicom_choices(request, single_part=single_instance)
    if sop is not None and series is not None:
        records = [service.instance(study, series, sop)]
    else:
        records = service.instances(study, series, with_metadata=False)
    syntaxes = [choose_syntax(record.TransferSyntaxUID, choices) for record in records]
    refused = [record for record, syntax in zip(records, syntaxes, strict=True) if syntax is None]
    if refused:
        wanted = ", ".join(sorted({syntax for syntax, _ in choices}))
        stored = ", ".join(sorted({record.TransferSyntaxUID for record in refused}))
        raise NotAcceptable(
            f"{len(refused)} of {len(records)} instances cannot be given in any accepted transfer syntax "
            f"({wanted}): they are stored as {stored} and this server has no codec for the conversion; "
            f"ask for transfer-syntax=* to receive them as stored"
        )
    if not multipart_wanted:
        record, syntax = records[0], syntaxes[0]
        assert syntax is not None
        headers = {"Content-Type": f"{DICOM}; transfer-syntax={syntax}"}
        if syntax == record.TransferSyntaxUID:
            headers["Content-Length"] = str(record.size)
        return Response(200, headers, _lazy(service.part10, record, syntax))
    parts = [
        multipart.Part(
            f"{DICOM}; transfer-syntax={syntax}",
            _lazy(service.part10, record, syntax),
            length=record.size if syntax == record.TransferSyntaxUID else None,
        )
        for record, syntax in zip(records, syntaxes, strict=True)
        if syntax is not None
    ]
    return _multipart_response(parts, DICOM)


def dicom_choices(request: Request, *, single_part: bool) -> tuple[bool, list[tuple[str, float]]]:
    """(multipart?, acceptable transfer syntaxes in preference order, ``*`` = as stored)."""
    accept = accept_value(request)
    if not accept.strip():
        return True, [(ExplicitVRLittleEndian, 1.0)]
    multipart_choices: list[tuple[str, float]] = []
    single_choices: list[tuple[str, float]] = []
    for media_range in parse_accept(accept):
        if media_range.q <= 0:
            continue
        params = dict(media_range.params)
        syntax = params.get("transfer-syntax") or ExplicitVRLittleEndian
        if media_range.type == "multipart/related":
            part_type = params.get("type", DICOM).lower()
            if part_type in (DICOM, "application/*", "*/*"):
                multipart_choices.append((syntax, media_range.q))
        elif media_range.type == DICOM and single_part:
            single_choices.append((syntax, media_range.q))
        elif media_range.type in ("*/*", "multipart/*"):
            multipart_choices.append((syntax, media_range.q))
    if multipart_choices:
        return True, _by_quality(multipart_choices)
    if single_choices:
        return False, _by_quality(single_choices)
    offered = 'multipart/related; type="application/dicom"' + (" or application/dicom" if single_part else "")
    raise NotAcceptable(f"cannot answer with any of the accepted media types ({accept.strip()}); "
                        f"this resource is {offered}")


def choose_syntax(stored: str, choices: Sequence[tuple[str, float]]) -> str | None:
    for syntax, _q in choices:
        if syntax in (ANY_SYNTAX, stored):
            return stored
        if can_transcode(stored, syntax):
            return syntax
    return None


def _by_quality(choices: list[tuple[str, float]]) -> list[tuple[str, float]]:
    return sorted(choices, key=lambda choice: -choice[1])  # stable: ties keep the client's order


# --- metadata -----------------------------------------------------------------------------------------

def retrieve_metadata(service: RetrieveService, request: Request, params: Mapping[str, str]) -> Response:
    media_type = negotiate(request, {DICOM_JSON: DICOM_JSON, JSON: JSON}, unsupported_note=XML_NOTE)
    study, series, sop = _uids(params)
    if sop is not None and series is not None:
        records = [service.instance(study, series, sop)]
    else:
        records = service.instances(study, series)
    return json_response(service.metadata(records, request.base_url), content_type=media_type)


# --- frames -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FrameAnswer:
    """How the frames of one instance go out: decoded or as stored, and each part's Content-Type."""

    decode: bool
    content_type: str
    multipart: bool = True


def retrieve_frames(service: RetrieveService, request: Request, params: Mapping[str, str]) -> Response:
    study, series, sop = _uids(params)
    assert series is not None and sop is not None
    numbers = parse_frame_numbers(params["frames"])
    record = service.instance(study, series, sop)
    answer = frame_answer(request, record.TransferSyntaxUID, single_frame=len(numbers) == 1)
    frames = service.frames(record, numbers, decode=answer.decode)
    if not answer.multipart:
        data = frames[0].data
        return Response(200, {"Content-Type": answer.content_type, "Content-Length": str(len(data))}, [data])
    parts = [multipart.Part(answer.content_type, [frame.data], length=len(frame.data)) for frame in frames]
    part_type = answer.content_type.split(";")[0]
    return _multipart_response(parts, part_type)


def frame_answer(request: Request, stored: str, *, single_frame: bool) -> FrameAnswer:
    """Choose between the stored bitstream and decoded pixels from the Accept header."""
    stored_type = frame_media_type(stored)
    as_stored = FrameAnswer(False, f"{stored_type}; transfer-syntax={stored}")
    uncompressed = FrameAnswer(stored not in LITTLE_ENDIAN_NATIVE,
                               f"{OCTET_STREAM}; transfer-syntax={ExplicitVRLittleEndian}")
    accept = accept_value(request)
    if not accept.strip():
        return uncompressed
    candidates: list[tuple[float, FrameAnswer]] = []
    for media_range in parse_accept(accept):
        if media_range.q <= 0:
            continue
        params = dict(media_range.params)
        if media_range.type == "multipart/related":
            part_type, is_multipart = params.get("type", OCTET_STREAM).lower(), True
        elif media_range.type in ("*/*", "multipart/*"):
            part_type, is_multipart = OCTET_STREAM, True
        elif single_frame:
            part_type, is_multipart = media_range.type, False
        else:
            continue
        syntax = params.get("transfer-syntax")
        answer = _frame_choice(part_type, syntax, stored, stored_type, as_stored, uncompressed)
        if answer is not None:
            candidates.append((media_range.q, FrameAnswer(answer.decode, answer.content_type, is_multipart)))
    if not candidates:
        raise NotAcceptable(
            f"cannot answer with any of the accepted media types ({accept.strip()}): the frames of this "
            f"instance are stored as {stored} and are available as {stored_type} (transfer-syntax={stored}"
            f" or *) or as uncompressed application/octet-stream"
        )
    return max(candidates, key=lambda candidate: candidate[0])[1]


def _frame_choice(part_type: str, syntax: str | None, stored: str, stored_type: str,
                  as_stored: FrameAnswer, uncompressed: FrameAnswer) -> FrameAnswer | None:
    if part_type in (OCTET_STREAM, "application/*", "*/*"):
        if syntax == ANY_SYNTAX or (syntax == stored and stored not in LITTLE_ENDIAN_NATIVE):
            # The stored bitstream under application/octet-stream, labelled with its syntax (OHIF).
            return FrameAnswer(False, f"{OCTET_STREAM}; transfer-syntax={stored}")
        if syntax in (None, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            return uncompressed
        return None
    major, _, minor = part_type.partition("/")
    stored_major, _, stored_minor = stored_type.partition("/")
    type_matches = major == stored_major and minor in ("*", stored_minor)
    if type_matches and stored_type != OCTET_STREAM and syntax in (None, ANY_SYNTAX, stored):
        return as_stored
    return None


def parse_frame_numbers(value: str) -> list[int]:
    """``1,3,5`` -> [1, 3, 5] (PS3.18 8.3.1.3: 1-based frame numbers, in the order asked)."""
    numbers = []
    for part in value.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise InvalidQuery(f"frame numbers are positive integers separated by commas, not {value!r}")
        numbers.append(int(part))
    if len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise InvalidQuery(f"at most {MAX_FRAMES_PER_REQUEST} frames per request")
    return numbers


# --- bulk data ----------------------------------------------------------------------------------------

PIXEL_DATA = "7FE00010"


def retrieve_bulkdata(service: RetrieveService, request: Request, params: Mapping[str, str]) -> Response:
    study, series, sop = _uids(params)
    assert series is not None and sop is not None
    record = service.instance(study, series, sop)
    single = _single_octet_stream(request)
    if params["path"].upper() in (PIXEL_DATA, "7FE00008", "7FE00009"):
        # Pixel Data: its frames as stored, one part each (the stored media type, or octet-stream).
        numbers = list(range(1, _number_of_frames(record) + 1))
        content_type = f"{frame_media_type(record.TransferSyntaxUID)}; transfer-syntax={record.TransferSyntaxUID}"
        frames = service.frames(record, numbers, decode=False)
        parts = [multipart.Part(content_type, [frame.data], length=len(frame.data)) for frame in frames]
        return _multipart_response(parts, content_type.split(";")[0])
    value = service.bulk_value(record, params["path"])
    if single:
        return Response(200, {"Content-Type": OCTET_STREAM, "Content-Length": str(len(value))}, [value])
    return _multipart_response([multipart.Part(OCTET_STREAM, [value], length=len(value))], OCTET_STREAM)


def _single_octet_stream(request: Request) -> bool:
    """True when the client takes a bare application/octet-stream and no multipart body."""
    accept = accept_value(request)
    if not accept.strip():
        return False
    ranges = [r for r in parse_accept(accept) if r.q > 0]
    if any(r.type in ("multipart/related", "multipart/*", "*/*") for r in ranges):
        return False
    if any(r.type in (OCTET_STREAM, "application/*") for r in ranges):
        return True
    raise NotAcceptable(f"cannot answer with any of the accepted media types ({accept.strip()}); bulk data is "
                        f'multipart/related; type="application/octet-stream" or application/octet-stream')


def _number_of_frames(record: InstanceRecord) -> int:
    values = record.metadata.get("00280008", {}).get("Value") or [1]
    try:
        return max(1, int(values[0]))
    except (TypeError, ValueError):
        return 1


# --- rendered and thumbnails --------------------------------------------------------------------------

RENDERED_OFFERED = {media_type: media_type for media_type in RENDERED_MEDIA_TYPES}


def retrieve_rendered(service: RetrieveService, request: Request, params: Mapping[str, str]) -> Response:
    media_type = negotiate(request, RENDERED_OFFERED)
    study, series, sop = _uids(params)
    assert series is not None and sop is not None
    frame_number = None
    if "frames" in params:
        numbers = parse_frame_numbers(params["frames"])
        if len(numbers) != 1:
            raise InvalidQuery("a rendered frame is one frame number (multiple frames would be a video)")
        frame_number = numbers[0]
    options = RenderOptions.from_query(_render_params(request))
    record = service.instance(study, series, sop)
    image = service.rendered(record, frame_number, media_type, options)
    return _image_response(image, media_type)


def retrieve_thumbnail(service: RetrieveService, request: Request, params: Mapping[str, str]) -> Response:
    media_type = negotiate(request, RENDERED_OFFERED)
    study, series, sop = _uids(params)
    render_params = _render_params(request)
    options = RenderOptions.from_query(render_params) if render_params else None
    frame_number = parse_frame_numbers(params["frames"])[0] if "frames" in params else None
    if sop is not None and series is not None:
        record = service.instance(study, series, sop)
    else:
        record = representative(service.instances(study, series))
    return _image_response(service.thumbnail(record, media_type, options, frame_number), media_type)


def representative(records: Sequence[InstanceRecord]) -> InstanceRecord:
    """The instance a study or series thumbnail shows: the middle image (by Instance Number) of the
    first series that has images; the first instance when none has pixel data."""
    images = [record for record in records if has_pixel_data(record)]
    if not images:
        return records[0]
    first_series = images[0].SeriesInstanceUID
    in_series = [record for record in images if record.SeriesInstanceUID == first_series]
    in_series.sort(key=_instance_number)
    return in_series[len(in_series) // 2]


def _instance_number(record: InstanceRecord) -> tuple[int, str]:
    values = record.metadata.get("00200013", {}).get("Value") or [0]
    try:
        return int(values[0]), record.SOPInstanceUID
    except (TypeError, ValueError):
        return 0, record.SOPInstanceUID


def _render_params(request: Request) -> list[tuple[str, str]]:
    return [(name, value) for name, value in request.query if name not in ("accept",)]


def _image_response(image: bytes, media_type: str) -> Response:
    return Response(200, {"Content-Type": media_type, "Content-Length": str(len(image))}, [image])


# --- shared -------------------------------------------------------------------------------------------

def _uids(params: Mapping[str, str]) -> tuple[str, str | None, str | None]:
    study = path_uid(params, "study", "StudyInstanceUID")
    assert study is not None  # every WADO-RS route captures the study
    return (study, path_uid(params, "series", "SeriesInstanceUID"),
            path_uid(params, "instance", "SOPInstanceUID"))


def _lazy(produce: Callable[..., Iterable[bytes]], *args: Any) -> Iterator[bytes]:
    """Call ``produce`` only when the body is consumed (a HEAD or a failed earlier part never reads)."""
    yield from produce(*args)


def _multipart_response(parts: list[multipart.Part], part_type: str) -> Response:
    boundary = multipart.new_boundary()
    headers = {"Content-Type": multipart.content_type(part_type, boundary)}
    length = multipart.multipart_length(parts, boundary)
    if length is not None:
        headers["Content-Length"] = str(length)
    return Response(200, headers, multipart.multipart_body(parts, boundary))
