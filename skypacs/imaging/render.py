"""Rendered images of stored instances (WADO-RS rendered and thumbnail resources, PS3.18 10.4.1.1.3,
8.3.5.1 and Table 8.3.5-1).

The grayscale pipeline is PS3.3 C.11's: Modality LUT (Rescale Slope/Intercept or Modality LUT Sequence),
then VOI (the ``window`` parameter, else the frame's first Window Center/Width, else its VOI LUT, else the
frame's own min..max), then MONOCHROME1 inversion. Colour images (RGB, YBR_* converted by pydicom,
PALETTE COLOR through its palette) are reduced to 8 bits per sample; ``window`` applies to grayscale only. Enhanced multi-frame objects take
rescale and window values from their per-frame, else shared, functional groups (PS3.3 C.7.6.16).

Only the frame asked for is decoded. Rendering an instance (no frame number) renders its first frame:
the archive does not make animations or videos of multi-frame instances.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi
from pydicom.pixels.utils import pixel_array
from pydicom.uid import DeflatedExplicitVRLittleEndian

from skypacs.errors import CannotTranscode, DamagedObject, InvalidQuery, NotFound

RENDERED_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif")
"""Media types :func:`render` produces, in order of preference (PS3.18 Table 8.7.4-1: JPEG is the default)."""

DEFAULT_QUALITY = 90
THUMBNAIL_SIZE = 128
WINDOW_FUNCTIONS = ("linear", "linear-exact", "sigmoid")
IGNORED_PARAMETERS = frozenset({"annotation", "charset", "iccprofile", "accept"})
"""Accepted and ignored: the archive burns in no annotations and renders no text; ICC profiles are not
applied (PS3.18 allows an origin server not to support them)."""

_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_PILLOW_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}


@dataclass(frozen=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2): ``function`` is linear, linear-exact or sigmoid."""

    center: float
    width: float
    function: str = "linear"


@dataclass(frozen=True)
class Viewport:
    """Output size (``width`` x ``height``) and the source region to fit in it (PS3.18 8.3.5.1.3).

    The region defaults to the whole image; a negative region width or height flips the image along
    that axis, as PS3.18 specifies.
    """

    width: int
    height: int
    sx: float | None = None
    sy: float | None = None
    sw: float | None = None
    sh: float | None = None


@dataclass(frozen=True)
class RenderOptions:
    """What a rendered request asked for; ``None`` means the archive's default."""

    window: Window | None = None
    viewport: Viewport | None = None
    quality: int | None = None

    @classmethod
    def from_query(cls, params: Sequence[tuple[str, str]]) -> RenderOptions:
        """Parse ``window``, ``viewport`` and ``quality`` (PS3.18 Table 8.3.5-1); ``annotation``,
        ``charset`` and ``iccprofile`` are accepted and ignored, as are parameters of other resources."""
        window: Window | None = None
        viewport: Viewport | None = None
        quality: int | None = None
        for name, value in params:
            if name == "window":
                window = _parse_window(value)
            elif name == "viewport":
                viewport = _parse_viewport(value)
            elif name == "quality":
                quality = _parse_quality(value)
        return cls(window=window, viewport=viewport, quality=quality)


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidQuery(f"{what} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise InvalidQuery(f"{what} must be a finite number, got {text!r}")
    return value


def _parse_window(value: str) -> Window:
    parts = [part.strip() for part in value.split(",")]
    if len(parts) not in (2, 3):
        raise InvalidQuery(f"window must be center,width,function (PS3.18 8.3.5.1.4), got {value!r}")
    center = _number(parts[0], "window center")
    width = _number(parts[1], "window width")
    function = parts[2].lower() if len(parts) == 3 and parts[2] else "linear"
    if function not in WINDOW_FUNCTIONS:
        raise InvalidQuery(f"window function must be one of {', '.join(WINDOW_FUNCTIONS)}, got {parts[2]!r}")
    if (function == "linear" and width < 1) or width <= 0:
        raise InvalidQuery(
            f"window width must be {'at least 1' if function == 'linear' else 'positive'}, got {parts[1]}"
        )
    return Window(center, width, function)


def _parse_viewport(value: str) -> Viewport:
    parts = [part.strip() for part in value.split(",")]
    if len(parts) not in (2, 6):
        raise InvalidQuery(f"viewport must be vw,vh or vw,vh,sx,sy,sw,sh (PS3.18 8.3.5.1.3), got {value!r}")
    sizes = []
    for text, what in zip(parts[:2], ("viewport width", "viewport height"), strict=True):
        if not text.isdigit() or int(text) < 1:
            raise InvalidQuery(f"{what} must be a positive integer, got {text!r}")
        if int(text) > 16384:
            raise InvalidQuery(f"{what} must be at most 16384, got {text}")
        sizes.append(int(text))
    region: list[float | None] = [None, None, None, None]
    for index, (text, what) in enumerate(zip(parts[2:], ("sx", "sy", "sw", "sh"), strict=False)):
        region[index] = _number(text, f"viewport {what}") if text else None
    sx, sy, sw, sh = region
    if (sx is not None and sx < 0) or (sy is not None and sy < 0):
        raise InvalidQuery("viewport sx and sy must not be negative")
    if sw == 0 or sh == 0:
        raise InvalidQuery("viewport sw and sh must not be zero")
    return Viewport(sizes[0], sizes[1], sx, sy, sw, sh)


def _parse_quality(value: str) -> int:
    if not value.strip().isdigit() or not 1 <= int(value) <= 100:
        raise InvalidQuery(f"quality must be an integer from 1 to 100, got {value!r}")
    return int(value)


# --- decoding ---------------------------------------------------------------------------------------


def _load_frame(data: BinaryIO, frame_number: int) -> tuple[Dataset, np.ndarray]:
    """The header and the one decoded frame (YBR converted to RGB by pydicom)."""
    if isinstance(frame_number, bool) or not isinstance(frame_number, int) or frame_number < 1:
        raise InvalidQuery(f"frame numbers are integers from 1: {frame_number!r} is not one")
    stream: BinaryIO = data if data.seekable() else io.BytesIO(data.read())
    start = stream.tell()
    try:
        header = pydicom.dcmread(stream, stop_before_pixels=True)
    except Exception as exc:
        raise DamagedObject(f"stored object cannot be read: {type(exc).__name__}: {exc}") from exc
    source: Dataset | BinaryIO = stream
    if header.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        # Positions in a deflated object are in the inflated stream: decode from the whole dataset.
        stream.seek(start)
        source = pydicom.dcmread(stream)
        present = any(tag in source for tag in _PIXEL_TAGS)
    else:
        present = len(stream.read(4)) == 4  # stop_before_pixels stopped at pixel data, not at the end
        stream.seek(start)
    if not present:
        raise CannotTranscode(f"instance {header.get('SOPInstanceUID', '?')} has no pixel data to render")
    frames = _frame_count(header)
    if frame_number > frames:
        raise NotFound(f"frame {frame_number} does not exist: the instance has {frames} frame(s)")
    try:
        values = pixel_array(source, index=frame_number - 1)
    except Exception as exc:
        raise DamagedObject(
            f"frame {frame_number} of {header.get('SOPInstanceUID', '?')} cannot be decoded: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return header, values


def _frame_count(header: Dataset) -> int:
    try:
        return max(1, int(header.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _frame_view(header: Dataset, index: int) -> Dataset:
    """The attributes the grayscale pipeline needs for one frame, functional groups resolved."""
    view = Dataset()
    for keyword in (
        "PhotometricInterpretation", "BitsStored", "BitsAllocated", "PixelRepresentation",
        "RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence",
        "WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence",
    ):  # fmt: skip
        if keyword in header:
            setattr(view, keyword, header[keyword].value)
    groups = []
    shared = header.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    per_frame = header.get("PerFrameFunctionalGroupsSequence")
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])  # per-frame values override shared ones
    for group in groups:
        for sequence, keywords in (
            ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept", "RescaleType")),
            ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction")),
        ):
            items = group.get(sequence)
            if items:
                for keyword in keywords:
                    if keyword in items[0]:
                        setattr(view, keyword, items[0][keyword].value)
    return view


# --- grayscale and colour to 8 bits ------------------------------------------------------------------


def _first(value: object) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple | pydicom.multival.MultiValue):
        return float(value[0]) if len(value) else None
    return float(value)  # type: ignore[arg-type]


def _window(values: np.ndarray, window: Window) -> np.ndarray:
    """PS3.3 C.11.2.1.2 (linear, linear-exact) and C.11.2.1.3.1 (sigmoid), onto 0..255."""
    c, w = window.center, window.width
    x = values.astype(np.float64)
    if window.function == "sigmoid":
        y = 255.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    elif window.function == "linear-exact":
        y = np.clip((x - c) / w + 0.5, 0.0, 1.0) * 255.0
    else:
        y = (
            np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0) * 255.0
            if w > 1
            else np.where(x > c - 0.5, 255.0, 0.0)
        )
    return np.asarray(np.rint(y), dtype=np.uint8)


def _min_max(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    low = float(finite.min()) if finite.size else 0.0
    high = float(finite.max()) if finite.size else 0.0
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return _window(values, Window((low + high) / 2, high - low, "linear-exact"))


def _grayscale(values: np.ndarray, view: Dataset, options: RenderOptions) -> np.ndarray:
    if "ModalityLUTSequence" in view or "RescaleSlope" in view or "RescaleIntercept" in view:
        values = apply_modality_lut(values, view)
    if options.window is not None:
        shown = _window(values, options.window)
    elif _first(view.get("WindowCenter")) is not None and _first(view.get("WindowWidth")):
        function = str(view.get("VOILUTFunction", "LINEAR")).strip().lower().replace("_", "-")
        window = Window(
            _first(view.WindowCenter) or 0.0,
            max(_first(view.WindowWidth) or 1.0, 1.0 if function == "linear" else 1e-6),
            function if function in WINDOW_FUNCTIONS else "linear",
        )
        shown = _window(values, window)
    elif "VOILUTSequence" in view:
        lut = view.VOILUTSequence[0]
        bits = int(lut.LUTDescriptor[2]) if "LUTDescriptor" in lut else 16
        out = apply_voi(values, view).astype(np.float64)
        shown = np.asarray(np.rint(np.clip(out / (2**bits - 1), 0.0, 1.0) * 255.0), dtype=np.uint8)
    else:
        shown = _min_max(values)
    if str(view.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        shown = 255 - shown  # PS3.3 C.7.6.3.1.2: the minimum value is displayed white
    return shown


def _colour(values: np.ndarray, header: Dataset) -> np.ndarray:
    if str(header.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR":
        values = apply_color_lut(values, header)
        high = int(values.max()) if values.size else 0
        return values.astype(np.uint8) if high <= 255 else np.asarray(values >> 8, dtype=np.uint8)
    bits = int(header.get("BitsStored", 8) or 8)
    if values.dtype.kind == "f":
        return _min_max(values)
    if bits > 8:
        values = values >> (bits - 8)
    return np.asarray(values, dtype=np.uint8)


def _to_image(header: Dataset, values: np.ndarray, index: int, options: RenderOptions) -> Image.Image:
    photometric = str(header.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric == "PALETTE COLOR" or values.ndim == 3:
        return Image.fromarray(_colour(values, header), mode="RGB")
    return Image.fromarray(_grayscale(values, _frame_view(header, index), options), mode="L")


# --- geometry and encoding ---------------------------------------------------------------------------


def _apply_viewport(image: Image.Image, viewport: Viewport | None) -> Image.Image:
    if viewport is None:
        return image
    sx = viewport.sx or 0.0
    sy = viewport.sy or 0.0
    sw = viewport.sw if viewport.sw is not None else image.width - sx
    sh = viewport.sh if viewport.sh is not None else image.height - sy
    left, right = sorted((sx, sx + sw))
    top, bottom = sorted((sy, sy + sh))
    left, top = max(0.0, left), max(0.0, top)
    right, bottom = min(float(image.width), right), min(float(image.height), bottom)
    if right - left < 1 or bottom - top < 1:
        raise InvalidQuery("viewport region lies outside the image")
    region = image.crop((round(left), round(top), round(right), round(bottom)))
    if sw < 0:
        region = region.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if sh < 0:
        region = region.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return _fit(region, viewport.width, viewport.height)


def _fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to fit inside width x height, aspect preserved (PS3.18 8.3.5.1.3)."""
    scale = min(width / image.width, height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def _encode(image: Image.Image, media_type: str, quality: int | None) -> bytes:
    media_type = media_type.split(";", 1)[0].strip().lower()
    pillow_format = _PILLOW_FORMATS.get(media_type)
    if pillow_format is None:
        raise CannotTranscode(
            f"cannot render as {media_type}: rendered media types are {', '.join(RENDERED_MEDIA_TYPES)}"
        )
    out = io.BytesIO()
    if pillow_format == "JPEG":
        image.save(out, format="JPEG", quality=quality or DEFAULT_QUALITY)
    elif pillow_format == "GIF":
        image.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(out, format="GIF")
    else:
        image.save(out, format="PNG")
    return out.getvalue()


def render(data: BinaryIO, frame_number: int | None, media_type: str, options: RenderOptions) -> bytes:
    """One frame of the stored object in ``data`` rendered as ``media_type``; frame 1 when
    ``frame_number`` is None (instance rendering renders the first frame).

    CannotTranscode (406) for an object without pixel data or an unsupported media type, NotFound for a
    frame beyond Number of Frames, DamagedObject when the frame cannot be decoded.
    """
    number = 1 if frame_number is None else frame_number
    if media_type.split(";", 1)[0].strip().lower() not in _PILLOW_FORMATS:
        _encode(Image.new("L", (1, 1)), media_type, None)  # raises the 406 before any decoding
    header, values = _load_frame(data, number)
    image = _apply_viewport(_to_image(header, values, number - 1, options), options.viewport)
    return _encode(image, media_type, options.quality)


def thumbnail(data: BinaryIO, media_type: str, options: RenderOptions | None = None,
              frame_number: int | None = None) -> bytes:
    """A frame (the first unless ``frame_number``) fitted in 128x128 (or the viewport asked for), aspect
    preserved (PS3.18 10.4.1.1.3 leaves the thumbnail's content to the origin server)."""
    options = options or RenderOptions()
    viewport = options.viewport or Viewport(THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    return render(data, frame_number, media_type, RenderOptions(options.window, viewport, options.quality))
