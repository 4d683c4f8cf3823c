"""make_thumbnails: one decode, several sizes, upright, sRGB, no metadata.

Thread safety: nothing here writes module state. Pillow's plugins are all imported when ``decode`` is first
imported; every call builds its own images, ICC transform and temp files. Pillow releases the GIL while it
decodes, resamples and encodes, so two worker threads keep two cores busy.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from agent.imaging import guards
from agent.imaging.colour import SrgbConverter, to_working
from agent.imaging.decode import decode
from agent.imaging.encode import for_format, write
from agent.imaging.orient import swaps_axes, upright
from agent.imaging.spec import Thumbnail, ThumbnailSpec, fit_size

# Resize with LANCZOS, but first box-reduce by an integer factor while the image is still more than this many
# times the target: keeps 50+ dB against a pure LANCZOS resize at a fraction of its cost (see IMAGING_NOTES.md).
REDUCING_GAP = 3.0


def make_thumbnails(source: Path, spec: ThumbnailSpec, out_dir: Path) -> list[Thumbnail]:
    """Decode `source` once and write one thumbnail per bound in `spec.sizes` into `out_dir` as ``{size}{ext}``.

    Returned in the order of ``spec.sizes``. Each thumbnail fits inside size x size, is never larger than the
    source, is upright (EXIF orientation applied, tag dropped), is 8-bit sRGB without an ICC profile, and carries
    no metadata at all (no EXIF, GPS, XMP, comments). Alpha is kept for WebP, PNG and AVIF and flattened on
    ``spec.background`` for JPEG. Of animated GIF/WebP/PNG and multi-page TIFF only the first frame is used.
    Sizes are made largest first, each from the previous result.

    Raises agent.errors.ImageError for anything wrong with the input (not an image, truncated, empty, too many
    pixels...), ValueError for an engine this installation does not offer, OSError when out_dir is unwritable.
    """
    if spec.engine == "pyvips":
        from agent.imaging import vips  # optional extra: imported only when asked for

        return vips.make_thumbnails(source, spec, out_dir)
    return _pillow_thumbnails(source, spec, out_dir)


def _pillow_thumbnails(source: Path, spec: ThumbnailSpec, out_dir: Path) -> list[Thumbnail]:
    guards.check_file(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    bounds = sorted(set(spec.sizes), reverse=True)
    made: dict[int, Thumbnail] = {}
    with source.open("rb") as fp:
        decoded = decode(fp, max_pixels=spec.max_pixels, largest_bound=bounds[0])
    working = to_working(decoded.image)
    to_srgb = SrgbConverter(working.mode, decoded.icc)
    box = decoded.box
    for bound in bounds:
        target = fit_size(*decoded.source_size, bound)
        if working.size != target:
            # Each size from the previous (larger) result: cheaper, and the same quality as from the source.
            working = working.resize(target, Image.Resampling.LANCZOS, box=box, reducing_gap=REDUCING_GAP)
            box = None
        out = for_format(upright(to_srgb(working), decoded.orientation), spec)
        path = out_dir / f"{bound}{spec.extension}"
        write(out, path, spec)
        width, height = (target[1], target[0]) if swaps_axes(decoded.orientation) else target
        made[bound] = Thumbnail(size=bound, path=path, width=width, height=height, content_type=spec.content_type)
    return [made[size] for size in spec.sizes]
