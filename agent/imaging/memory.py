"""How much memory making one source's thumbnails takes, worked out from its header before any pixel is decoded.

The worker admits jobs against ``worker.max_memory_mb`` with this estimate (see agent.pipeline.admission), so two
100 MP PNGs never decode at the same time on a small box. The estimate follows what the Pillow engine holds at
its peak: the decoded image (Pillow keeps multi-band 8-bit pixels in 4 bytes each), a full-size conversion when
the source's mode is not one it resamples directly (palette, 16-bit...), the resize's intermediates, and the
thumbnails. JPEGs decode at a reduced DCT scale (``draft``), which is why a
24 MP JPEG costs a few MB. Measurements: benchmarks/bench_memory.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from agent.errors import ImageError
from agent.imaging.colour import WORKING_MODES
from agent.imaging.decode import _DECODER_ERRORS, DRAFT_MARGIN, identify
from agent.imaging.pillow_engine import REDUCING_GAP
from agent.imaging.spec import ThumbnailSpec, fit_size

MIB = 1 << 20
# Codec state, row buffers, the ICC transform and the encoder: measured at 5-12 MB, rounded up.
OVERHEAD = 16 * MIB

# Bytes per pixel of Pillow's in-memory modes (multi-band 8-bit images take 4 bytes a pixel, padding included).
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "I": 4, "F": 4}


@dataclass(frozen=True)
class Estimate:
    width: int
    height: int
    mode: str
    format: str
    scale: int  # the JPEG draft reduction (1, 2, 4 or 8): the decoded image is about width/scale x height/scale
    bytes: int

    @property
    def mb(self) -> int:
        return math.ceil(self.bytes / MIB)

    def describe(self) -> str:
        """What it needs, and why: about 400 MB of memory (10000x10000 PNG RGB)."""
        scaled = f", decoded at 1/{self.scale}" if self.scale > 1 else ""
        return f"about {self.mb} MB of memory ({self.width}x{self.height} {self.format} {self.mode}{scaled})"


def bytes_per_pixel(mode: str) -> int:
    return _BYTES_PER_PIXEL.get(mode, 4)


def draft_scale(width: int, height: int, fmt: str, largest_bound: int) -> int:
    """The DCT scale decode._draft asks libjpeg for: the largest of 1/2, 1/4, 1/8 that still leaves
    DRAFT_MARGIN times the largest thumbnail on each side (1: no reduction)."""
    if fmt not in ("JPEG", "MPO"):
        return 1
    target_w, target_h = fit_size(width, height, largest_bound)
    need_w, need_h = math.ceil(target_w * DRAFT_MARGIN), math.ceil(target_h * DRAFT_MARGIN)
    if need_w >= width or need_h >= height:
        return 1
    scale = 1
    while scale < 8 and math.ceil(width / (scale * 2)) >= need_w and math.ceil(height / (scale * 2)) >= need_h:
        scale *= 2
    return scale


def estimate_bytes(width: int, height: int, mode: str, fmt: str, spec: ThumbnailSpec) -> Estimate:
    """The peak memory of one job, from what the header says (pure arithmetic: unit-tested as such)."""
    bound = max(spec.sizes)
    scale = draft_scale(width, height, fmt, bound)
    decoded_w, decoded_h = math.ceil(width / scale), math.ceil(height / scale)
    pixels = decoded_w * decoded_h
    total = pixels * bytes_per_pixel(mode)
    if mode not in WORKING_MODES:
        total += pixels * 4  # palette, 16-bit, 1-bit, LAB...: converted at full size before resizing
    # The largest size is resized from the decoded image: a box reduce by an integer factor (reducing_gap), then
    # LANCZOS, whose horizontal pass makes a target-wide, reduced-high intermediate.
    tw, th = fit_size(width, height, bound)
    factor = max(1, int(min(decoded_w / tw, decoded_h / th) / REDUCING_GAP))
    if factor > 1:
        total += math.ceil(decoded_w / factor) * math.ceil(decoded_h / factor) * 4
    total += tw * math.ceil(decoded_h / factor) * 4
    for size in spec.sizes:
        tw, th = fit_size(width, height, size)
        total += tw * th * 4 * 3  # resized, converted to sRGB, upright
    return Estimate(width, height, mode, fmt, scale, total + OVERHEAD)


def estimate(source: Path, spec: ThumbnailSpec) -> Estimate | None:
    """The memory making ``source``'s thumbnails takes, read from its header; None when the header cannot be read
    (the decode itself then fails with the right reason)."""
    try:
        with source.open("rb") as fp:
            im = identify(fp)
            width, height, mode, fmt = im.width, im.height, im.mode, im.format or ""
    except (ImageError, *_DECODER_ERRORS):  # reported by the decode itself, with its proper reason
        return None
    if width <= 0 or height <= 0:
        return None
    return estimate_bytes(width, height, mode, fmt, spec)
