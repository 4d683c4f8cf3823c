"""make_thumbnails: one decode, several sizes, upright, sRGB, no metadata. Picks the engine the spec names."""

from __future__ import annotations

from pathlib import Path

from agent.errors import ImageError
from agent.imaging import guards, pillow_engine
from agent.imaging.spec import Thumbnail, ThumbnailSpec


def make_thumbnails(source: Path, spec: ThumbnailSpec, out_dir: Path) -> list[Thumbnail]:
    """Decode `source` once and write one thumbnail per bound in `spec.sizes` into `out_dir` as ``{size}{ext}``.

    Returned in the order of ``spec.sizes``. Each thumbnail fits inside size x size, is never larger than the
    source, is upright (EXIF orientation applied, tag dropped), is 8-bit sRGB without an ICC profile, and carries
    no metadata at all (no EXIF, GPS, XMP, comments). Alpha is kept for WebP, PNG and AVIF and flattened on
    ``spec.background`` for JPEG. Of animated GIF/WebP/PNG and multi-page TIFF only the first frame is used.
    Sizes are made largest first, each from the previous result. ``engine="pyvips"`` (optional extra) has libvips
    decode PNG, WebP, TIFF, GIF and AVIF, and hands everything else to Pillow (see agent.imaging.vips).

    Raises agent.errors.ImageError for anything wrong with the input (not an image, truncated, empty, too many
    pixels...), ValueError for an engine this installation does not offer, OSError when out_dir is unwritable.
    """
    if spec.engine == "pyvips":
        try:
            from agent.imaging import vips  # optional extra: imported only when asked for
        except (ImportError, OSError) as exc:  # OSError: the pyvips binding is there but libvips is not
            raise ValueError(f'engine "pyvips" needs the optional extra: pip install "pyvips[binary]" ({exc})') from exc
        make = vips.make_thumbnails
    else:
        make = pillow_engine.make_thumbnails
    try:
        return make(source, spec, out_dir)
    except ImageError as exc:
        # A file cut short (still being written) can fail as "corrupt" (libwebp): say truncated, so it is retried.
        raise guards.classify(source, exc) from exc
