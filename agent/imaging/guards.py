"""Input checks shared by both engines, each failing with an ImageError whose reason a user understands."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import BinaryIO

from agent.errors import ImageError
from agent.imaging.spec import megapixels

NOT_AN_IMAGE = "not an image (file content is not a recognised image format)"
TRUNCATED = "truncated image data"
# What to do about a file whose content is at fault: the uploader sends a changed file again, and the worker
# tries each new version.
FIX = "replace or remove the file: it is tried again when it changes"

# Magic numbers of the formats we accept, to tell "not an image" from "an image whose header is broken".
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (8, b"WEBP", "WebP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"BM", "BMP"),
    (4, b"ftypavif", "AVIF"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
)


def check_file(source: Path) -> int:
    """Fail early on a missing, unreadable or empty source; return its size in bytes."""
    try:
        st = source.stat()
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except OSError as exc:
        raise ImageError(f"cannot read file ({exc.strerror or exc})") from exc
    if not source.is_file():
        raise ImageError("not a regular file")
    if st.st_size == 0:
        raise bad_file("empty file (0 bytes)")
    return st.st_size


def check_dimensions(width: int, height: int, max_pixels: int) -> None:
    """Refuse degenerate and oversized images from their header, before any pixel is decoded."""
    if width <= 0 or height <= 0:
        raise ImageError(f"image has no pixels ({width}x{height})")
    pixels = width * height
    if pixels > max_pixels:
        size, limit = megapixels(pixels), megapixels(max_pixels)
        if size == limit:  # "180 MP exceeds (180 MP)" would read as a bug: show the exact counts
            size, limit = f"{pixels} px", f"{max_pixels} px"
        reason = f"{width}x{height} = {size} exceeds thumbnails.max_pixels ({limit})"
        raise ImageError(f"image too large: {reason}; possible decompression bomb")


def sniff(prefix: bytes) -> str | None:
    """The format `prefix` (the file's first bytes) claims to be, or None."""
    for offset, magic, name in _SIGNATURES:
        if prefix[offset : offset + len(magic)] == magic:
            return name
    return None


def unidentified(prefix: bytes) -> ImageError:
    """The error for a file no accepted decoder recognised."""
    claimed = sniff(prefix)
    if claimed is None:
        return bad_file(NOT_AN_IMAGE)
    return bad_file(
        f"corrupt {claimed} header (the file starts like a {claimed} image but its header cannot be read: "
        "it may be truncated, zero-sized or damaged)"
    )


def bad_file(reason: str) -> ImageError:
    """An ImageError for a file whose content is at fault: the reason, then what to do about it."""
    return ImageError(f"{reason}; {FIX}")


def with_detail(reason: str, detail: str) -> str:
    """``reason (detail)`` without doubled parentheses: Pillow says "image file is truncated (154 bytes not
    processed)", which would read "truncated image data (image file is truncated (154 bytes not processed))"."""
    detail = " ".join(detail.split())
    m = re.fullmatch(r"image file is truncated(?: \((.*)\))?", detail, flags=re.IGNORECASE)
    if m:
        detail = m.group(1) or ""
    if not detail:
        return reason
    return f"{reason}: {detail}" if "(" in detail else f"{reason} ({detail})"


def is_environment_error(exc: BaseException) -> bool:
    """True for OS-level failures (disk full, permissions) that are not the image's fault."""
    return isinstance(exc, OSError) and exc.errno is not None


def maybe_incomplete(reason: str) -> bool:
    """Whether a failure with this reason could be a file caught while it was still being written."""
    return reason.startswith((TRUNCATED, "empty file")) or "may be truncated" in reason


def decode_failure(exc: BaseException) -> ImageError:
    """Turn a decoder's exception into a user-facing reason."""
    text = str(exc).strip()
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return bad_file(with_detail(TRUNCATED, text or type(exc).__name__))
    if isinstance(exc, MemoryError):
        return ImageError("not enough memory to decode the image")
    return bad_file(with_detail("corrupt image data", text or type(exc).__name__))


def cut_short(source: Path) -> str | None:
    """Why ``source`` looks cut short, judged by its container, or None: a decoder's "corrupt data" for a file
    whose header declares more bytes than it has is a file caught while it was being written (a WebP decoder
    says "could not create decoder object", not "truncated"). Only the headers and a few box headers are read."""
    try:
        with open(source, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            head = f.read(16)
            if len(head) < 12:
                return None
            if head[:4] == b"RIFF":  # WebP (and any RIFF): the size after the first 8 bytes
                declared = struct.unpack("<I", head[4:8])[0] + 8
                return f"its RIFF header declares {declared} bytes, the file has {size}" if declared > size else None
            if head[4:8] == b"ftyp":  # ISO-BMFF (AVIF, HEIC): top-level boxes must fit in the file
                return _box_past_end(f, size)
            if head[:4] in (b"II*\x00", b"MM\x00*"):  # TIFF: the first IFD must be inside the file
                ifd = struct.unpack("<I" if head[:2] == b"II" else ">I", head[4:8])[0]
                return f"its first TIFF directory is at byte {ifd}, the file has {size}" if ifd >= size else None
            f.seek(size - 1)
            tail = f.read(1)
    except OSError:
        return None
    # JPEG and PNG are not judged here: their decoders say "truncated" themselves, and a JPEG without its end
    # marker is as often damaged as cut short.
    if head[:6] in (b"GIF87a", b"GIF89a") and tail != b";":
        return "it does not end with the GIF trailer"
    return None


def _box_past_end(f: BinaryIO, size: int) -> str | None:
    offset = 0
    for _ in range(10_000):  # top-level boxes are few: ftyp, meta, mdat...
        if offset + 8 > size:
            return None if offset == size else f"a box header is cut at byte {offset}, the file has {size}"
        f.seek(offset)
        header = f.read(16)
        length, kind = struct.unpack(">I4s", header[:8])
        if length == 1 and len(header) == 16:
            length = struct.unpack(">Q", header[8:16])[0]
        elif length == 0:  # "to the end of the file"
            return None
        if length < 8:
            return None  # damaged, not cut short
        if offset + length > size:
            name = kind.decode("latin-1")
            return f"its '{name}' box ends at byte {offset + length}, the file has {size}"
        offset += length
    return None


def classify(source: Path, exc: ImageError) -> ImageError:
    """``exc``, or a truncation error when the engine said something else about a file that is cut short."""
    if not str(exc).startswith("corrupt "):
        return exc  # already "truncated", or a verdict a shorter file does not change (too many pixels, not an image)
    why = cut_short(source)
    return exc if why is None else bad_file(f"{TRUNCATED} ({why})")
