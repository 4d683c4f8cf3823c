"""The Pillow engine: one decode (at reduced DCT scale for JPEG), each size from the previous one.

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

# Resize with LANCZOS, but first box-reduce by an integer factor as long as at least this many times the target
# is left for LANCZOS. Pillow's own default: 54+ dB against a pure LANCZOS resize from full size at a fraction of
# its cost; 3.0 buys ~1.5 dB for 10-130 % more resampling time (see benchmarks/IMAGING_NOTES.md).
REDUCING_GAP = 2.0


def make_thumbnails(source: Path, spec: ThumbnailSpec, out_dir: Path) -> list[Thumbnail]:
    """agent.imaging.make_thumbnails with Pillow."""
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
