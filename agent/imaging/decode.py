"""Pillow decoding: identify the format from a short allow-list, check the header size, then decode once.

Why not ``Image.open``: it enforces Pillow's process-wide ``Image.MAX_IMAGE_PIXELS`` (warning above 89 MP,
error above 179 MP), which would override ``thumbnails.max_pixels`` (200 MP by default) and can only be changed
globally, which is not thread safe. We look up the same plugin factories Pillow's ``open`` uses, restricted to
formats a photo thumbnailer needs (no EPS, which runs Ghostscript, no PSD, ICO, fonts...), and check
``width * height`` against our own limit before a single pixel is decoded.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image, ImageFile

from agent.errors import ImageError
from agent.imaging import guards
from agent.imaging.orient import read_orientation
from agent.imaging.spec import fit_size, megapixels

try:  # HEIC/HEIF input is an optional extra (pip install pillow-heif)
    import pillow_heif
except ImportError:  # pragma: no cover - depends on the installation
    HEIF_AVAILABLE = False
else:
    pillow_heif.register_heif_opener()
    HEIF_AVAILABLE = True

# Import every Pillow plugin now, once, so that no call mutates Pillow's plugin registry later.
Image.init()

# Formats we accept, in the order they are tried. MPO (multi-picture JPEG, written by many cameras) is opened
# through the JPEG entry, whose factory picks MPO itself.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "HEIF", "AVIF", "GIF", "TIFF", "BMP")

# Decode JPEGs at the smallest DCT scale (1/2, 1/4, 1/8) that still leaves this many times the largest
# thumbnail's pixels per side, so the final LANCZOS step has real detail to filter. See IMAGING_NOTES.md.
DRAFT_MARGIN = 1.5

# What Pillow's decoders raise on corrupt input besides OSError: every one of these has been seen on fuzzed
# files in Pillow's tracker. Anything here means "this file is bad", never "retry".
_DECODER_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    TypeError,
    KeyError,
    ZeroDivisionError,
    OverflowError,
    MemoryError,
)


@dataclass
class Decoded:
    """A decoded source image, still in its stored orientation and colour space."""

    image: Image.Image
    source_size: tuple[int, int]  # width, height in the file (before any draft reduction)
    box: tuple[float, float, float, float] | None  # the region of `image` that covers the whole source
    orientation: int  # EXIF orientation 1-8
    icc: bytes | None  # embedded ICC profile
    format: str  # Pillow's format name, e.g. JPEG


def identify(fp: BinaryIO) -> ImageFile.ImageFile:
    """Open (header only) an image of one of ACCEPTED_FORMATS, without Pillow's global size limit."""
    prefix = fp.read(16)
    for fmt in ACCEPTED_FORMATS:
        entry = Image.OPEN.get(fmt)
        if entry is None:  # e.g. HEIF without pillow-heif, AVIF without libavif
            continue
        factory, accept = entry
        verdict = accept(prefix) if accept is not None else True
        if isinstance(verdict, str) or not verdict:  # a string means "recognised but unsupported here"
            continue
        fp.seek(0)
        try:
            return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue  # Pillow's convention for "not this format after all": try the next one, as Image.open does
    raise guards.unidentified(prefix)


def decode(fp: BinaryIO, *, max_pixels: int, largest_bound: int) -> Decoded:
    """Decode `fp` once, at reduced DCT scale for JPEG. Raises ImageError for anything wrong with the file."""
    try:
        im = identify(fp)
        width, height = im.size
        guards.check_dimensions(width, height, max_pixels)
        box = _draft(im, largest_bound)
        pixels = _load(im)
        orientation = read_orientation(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # a frame or tile inside the file is larger than its header said
        raise ImageError(
            f"image too large: {exc} (thumbnails.max_pixels is {megapixels(max_pixels)}); possible decompression bomb"
        ) from exc
    except _DECODER_ERRORS as exc:
        raise guards.decode_failure(exc) from exc
    icc = im.info.get("icc_profile")
    return Decoded(
        image=pixels,
        source_size=(width, height),
        box=box,
        orientation=orientation,
        icc=icc if isinstance(icc, bytes) else None,
        format=im.format or "",
    )


def _load(im: ImageFile.ImageFile) -> Image.Image:
    """Decode the pixels of `im` (its first frame)."""
    if im.format == "WEBP":
        frame = _webp_first_frame(im)
        if frame is not None:
            return frame
    im.load()
    return im


def _webp_first_frame(im: ImageFile.ImageFile) -> Image.Image | None:
    """The first WebP frame as an image over libwebp's own buffer, or None to let Pillow load it.

    Pillow's WebP ``load()`` copies the frame libwebp returns through a raw decoder into a new image: a second
    full-size buffer and 15-30 % of the decode time (17 MP: 68 MB and ~60 ms for RGB, ~180 ms for RGBA, see
    benchmarks/IMAGING_NOTES.md). ``frombuffer`` maps the returned bytes instead. This uses two attributes of
    Pillow's WebP plugin (``_decoder`` and ``rawmode``, stable since Pillow 5); if they change, the normal load
    runs. RGB files come back as RGBX, which colour.py drops to RGB after resizing.
    """
    rawmode = getattr(im, "rawmode", None)
    get_next = getattr(getattr(im, "_decoder", None), "get_next", None)
    if rawmode not in ("RGBA", "RGBX") or not callable(get_next):
        return None
    frame = get_next()  # the first frame: _open leaves the decoder at the start
    if frame is None:
        raise EOFError("failed to decode the first WebP frame")
    data = frame[0]
    if not isinstance(data, bytes) or len(data) != im.width * im.height * 4:
        raise EOFError("the WebP decoder returned a frame of the wrong size")
    return Image.frombuffer(rawmode, im.size, data, "raw", rawmode, 0, 1)


def _draft(im: ImageFile.ImageFile, largest_bound: int) -> tuple[float, float, float, float] | None:
    """Ask the JPEG decoder for a reduced scale; returns the source box in the reduced image, or None."""
    if im.format not in ("JPEG", "MPO"):
        return None
    target_w, target_h = fit_size(im.width, im.height, largest_bound)
    request = (math.ceil(target_w * DRAFT_MARGIN), math.ceil(target_h * DRAFT_MARGIN))
    if request[0] >= im.width or request[1] >= im.height:
        return None  # the full-size decode is needed anyway
    drafted = im.draft(None, request)
    if drafted is None:
        return None
    _, (x0, y0, x1, y1) = drafted
    return (float(x0), float(y0), float(x1), float(y1))
