"""Optional pyvips engine (``spec.engine == "pyvips"``; extra: ``pip install "pyvips[binary]"``).

Worth it for PNG and WebP: libvips streams PNG through libspng and decodes WebP at reduced scale, about 1.6x
faster than Pillow, and for WebP with ~5x less peak memory (numbers in benchmarks/IMAGING_NOTES.md). Pillow's
own JPEG path (draft + LANCZOS) is as fast or faster, so sources that libvips would not handle better, or
would handle differently, go through the Pillow engine instead and come out identical:

* JPEG (Pillow with draft is at least as fast), HEIC (pyvips' bundled libheif has no HEVC decoder);
* untagged CMYK (libvips would apply its own generic CMYK profile; Pillow's naive inversion is the reference);
* anything libvips cannot identify or does not load with a loader on the allow-list below (so the user gets the
  same precise reason from Pillow: not an image, corrupt header, ...), and exotic pixel formats (float, 32-bit).

libvips is permissive by default, so every guard is explicit here: the pixel limit is checked on the header
before decoding, and ``fail_on="truncated"`` turns truncated data into an error instead of grey rows.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyvips

from agent.errors import ImageError
from agent.imaging import guards, pillow_engine
from agent.imaging.encode import MAX_SIDE
from agent.imaging.orient import swaps_axes
from agent.imaging.spec import Thumbnail, ThumbnailSpec, fit_size
from agent.state.files import temp_prefix

# libvips' operation cache is process-wide: it would keep source files open and, worse, hand back the thumbnail
# of an earlier file when a new file is downloaded to the same path. Off, once, when this extra is first used.
pyvips.cache_set_max(0)

# Loaders whose input the pyvips engine decodes itself; heifload only for AV1 (AVIF) payloads.
VIPS_LOADERS = frozenset({"pngload", "webpload", "gifload", "tiffload", "heifload"})

# libvips reports file system failures as plain errors; these strerror texts mark them.
_ENVIRONMENT_ERRORS = ("No space left on device", "Permission denied", "Read-only file system", "Disk quota exceeded")

# Pixel formats and interpretations handled here; anything else goes to Pillow.
_FORMATS = frozenset({"uchar", "ushort"})
_INTERPRETATIONS = frozenset({"srgb", "b-w", "rgb16", "grey16", "cmyk"})


def make_thumbnails(source: Path, spec: ThumbnailSpec, out_dir: Path) -> list[Thumbnail]:
    """Same contract as agent.imaging.make_thumbnails, with libvips doing the decoding and resampling."""
    guards.check_file(source)
    header = _header(source)
    if header is None:
        return pillow_engine.make_thumbnails(source, spec, out_dir)
    width, height = header.width, _page_height(header)
    guards.check_dimensions(width, height, spec.max_pixels)
    if swaps_axes(_orientation(header)):
        width, height = height, width  # thumbnail() turns the image upright: sizes are of the upright image
    out_dir.mkdir(parents=True, exist_ok=True)
    bounds = sorted(set(spec.sizes), reverse=True)
    made: dict[int, Thumbnail] = {}
    try:
        # thumbnail(): shrink-on-load, EXIF auto-rotate, premultiplied LANCZOS3, embedded profile -> sRGB.
        # Materialised (it is small) so the smaller sizes can be made from it without decoding again.
        options: dict[str, str] = {"fail_on": "truncated", "intent": "perceptual"}
        if "icc-profile-data" in header.get_fields():
            options["export_profile"] = "srgb"  # libvips keeps the source's colour space unless told
        current = pyvips.Image.thumbnail(str(source), bounds[0], height=bounds[0], size="down", **options).copy_memory()
    except pyvips.Error as exc:
        raise _failure(exc) from exc
    for bound in bounds:
        target = fit_size(width, height, bound)  # from the source's size, so both engines agree to the pixel
        if (current.width, current.height) != target:
            current = _resize(current, target)  # from the previous (larger) thumbnail
        path = out_dir / f"{bound}{spec.extension}"
        _write(_for_format(_to_8bit_srgb(current), spec), path, spec)
        made[bound] = Thumbnail(bound, path, current.width, current.height, spec.content_type)
    return [made[size] for size in spec.sizes]


def _header(source: Path) -> pyvips.Image | None:
    """The source's header if this engine should decode it, else None (the Pillow engine takes over)."""
    try:
        header = pyvips.Image.new_from_file(str(source), access="sequential")
        loader = header.get("vips-loader")
    except pyvips.Error:
        return None  # not identified: Pillow gives the precise reason
    fields = header.get_fields()
    if loader.removesuffix("_source") not in VIPS_LOADERS:
        return None
    if loader.startswith("heifload") and "heif-compression" in fields and header.get("heif-compression") != "av1":
        return None
    if header.format not in _FORMATS or header.interpretation not in _INTERPRETATIONS:
        return None
    if header.interpretation == "cmyk" and "icc-profile-data" not in fields:
        return None
    return header


def _orientation(header: pyvips.Image) -> int:
    """EXIF orientation (1-8) as libvips parsed it; 1 when absent or invalid."""
    if "orientation" not in header.get_fields():
        return 1
    value = int(header.get("orientation"))
    return value if 1 <= value <= 8 else 1


def _page_height(header: pyvips.Image) -> int:
    """Height of the first frame: multi-page loaders may report the whole strip."""
    if "page-height" in header.get_fields():
        return min(int(header.height), int(header.get("page-height")))
    return int(header.height)


def _resize(im: pyvips.Image, target: tuple[int, int]) -> pyvips.Image:
    """LANCZOS3 resize to exactly `target`, premultiplying alpha so transparent pixels do not bleed colour."""
    hscale, vscale = target[0] / im.width, target[1] / im.height
    if not im.hasalpha():
        return im.resize(hscale, vscale=vscale, kernel="lanczos3").copy_memory()
    resized = im.premultiply().resize(hscale, vscale=vscale, kernel="lanczos3").unpremultiply()
    return resized.cast(im.format).copy_memory()


def _to_8bit_srgb(im: pyvips.Image) -> pyvips.Image:
    """8-bit grey or sRGB (with alpha if any). 16-bit data is scaled, not clipped."""
    grey = im.interpretation in ("b-w", "grey16")
    if im.format == "uchar" and im.interpretation in ("b-w", "srgb"):
        return im
    return im.colourspace("b-w" if grey else "srgb")


def _for_format(im: pyvips.Image, spec: ThumbnailSpec) -> pyvips.Image:
    """JPEG has no alpha: flatten on the background (grey stays grey on a grey background)."""
    if spec.format != "jpeg" or not im.hasalpha():
        return im
    background = list(spec.background)
    grey_background = background[0] == background[1] == background[2]
    if im.interpretation == "b-w" and grey_background:
        return im.flatten(background=[background[0]])
    if im.interpretation == "b-w":
        im = im.colourspace("srgb")
    return im.flatten(background=background).cast("uchar")


def _write(im: pyvips.Image, path: Path, spec: ThumbnailSpec) -> None:
    """Save with keep="none" (no EXIF, XMP, IPTC, ICC), via a temp file renamed into place."""
    limit = MAX_SIDE[spec.format]
    if max(im.width, im.height) > limit:
        size, fmt = f"{im.width}x{im.height}", spec.format
        raise ImageError(f"cannot write a {size} {fmt} thumbnail: {fmt} allows at most {limit} px a side")
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path))  # the one temp naming (agent.state.files)
    os.close(fd)  # libvips writes by name
    tmp = Path(name)
    try:
        if spec.format == "jpeg":
            im.jpegsave(str(tmp), Q=spec.quality, interlace=spec.progressive, optimize_coding=True, keep="none")
        elif spec.format == "webp":
            im.webpsave(str(tmp), Q=spec.quality, effort=4, keep="none")
        elif spec.format == "avif":
            im.heifsave(str(tmp), Q=spec.quality, compression="av1", effort=2, keep="none")
        else:
            im.pngsave(str(tmp), compression=6, filter="all", keep="none")  # adaptive filters, as Pillow
        tmp.replace(path)
    except pyvips.Error as exc:
        tmp.unlink(missing_ok=True)
        reason = _first_line(exc)
        if any(problem in reason for problem in _ENVIRONMENT_ERRORS):
            raise OSError(reason) from exc  # not the image's fault: the caller treats it like any disk error
        raise ImageError(f"cannot encode {spec.format} thumbnail ({reason})") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _first_line(exc: pyvips.Error) -> str:
    detail = (getattr(exc, "detail", "") or "").strip()
    return detail.splitlines()[0] if detail else str(exc).strip().splitlines()[0]


def _failure(exc: pyvips.Error) -> ImageError:
    """A user-facing reason for a libvips decode error."""
    detail = " ".join(str(getattr(exc, "detail", "")).split()) or str(exc)
    lowered = detail.lower()
    if "premature end" in lowered or "truncated" in lowered or "read error" in lowered or "out of data" in lowered:
        return guards.bad_file(guards.with_detail(guards.TRUNCATED, _first_line(exc)))
    return guards.bad_file(guards.with_detail("corrupt image data", _first_line(exc)))
