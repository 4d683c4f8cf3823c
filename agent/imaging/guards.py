"""Input checks shared by both engines, each failing with an ImageError whose reason a user understands."""

from __future__ import annotations

from pathlib import Path

from agent.errors import ImageError
from agent.imaging.spec import megapixels

NOT_AN_IMAGE = "not an image (file content is not a recognised image format)"
TRUNCATED = "truncated image data"

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
        raise ImageError("empty file (0 bytes)")
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
        return ImageError(NOT_AN_IMAGE)
    return ImageError(
        f"corrupt {claimed} header (the file starts like a {claimed} image but its header cannot be read; "
        "it may be truncated, zero-sized or damaged)"
    )


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
        return ImageError(f"{TRUNCATED} ({text or type(exc).__name__})")
    if isinstance(exc, MemoryError):
        return ImageError("not enough memory to decode the image")
    return ImageError(f"corrupt image data ({text or type(exc).__name__})")
