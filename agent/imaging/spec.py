"""What to make (ThumbnailSpec), what was made (Thumbnail), and the size arithmetic both engines share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FORMAT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "jpeg": (".jpg", ".jpeg"),
    "webp": (".webp",),
    "png": (".png",),
    "avif": (".avif",),
}

CONTENT_TYPES: dict[str, str] = {
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "png": "image/png",
    "avif": "image/avif",
}

ENGINES = ("pillow", "pyvips")

# Videos get a poster thumbnail (and, with video.preview, a web preview named like ``clip.mov.mp4``).
VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".3gp")
PREVIEW_EXTENSION = ".mp4"
PREVIEW_CONTENT_TYPE = "video/mp4"


def is_video(name: str) -> bool:
    return name.lower().endswith(VIDEO_EXTENSIONS)


def preview_name(name: str) -> str:
    """``clip.mov`` -> ``clip.mov.mp4``: always appended, so the source's name can be read back from it."""
    return name + PREVIEW_EXTENSION


@dataclass(frozen=True)
class ThumbnailSpec:
    """How thumbnails are made. Invalid values raise ValueError at construction (a config bug, not a bad image)."""

    sizes: tuple[int, ...] = (256,)  # bounding boxes; output fits inside size x size
    format: str = "jpeg"  # jpeg | webp | png | avif
    quality: int = 85  # 1-100; ignored for png (lossless)
    progressive: bool = False  # jpeg only
    background: tuple[int, int, int] = (255, 255, 255)  # transparent pixels are flattened on it for jpeg
    max_pixels: int = 200_000_000  # larger sources (width x height, read from the header) are refused
    engine: str = "pillow"  # "pillow", or "pyvips" when the optional extra is installed

    def __post_init__(self) -> None:
        # Config hands us lists; a frozen dataclass should hold a hashable tuple.
        object.__setattr__(self, "sizes", tuple(self.sizes))
        object.__setattr__(self, "background", tuple(self.background))
        problems = []
        if not self.sizes:
            problems.append("sizes must not be empty")
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in self.sizes):
            problems.append(f"sizes must be positive integers, got {list(self.sizes)}")
        if self.format not in CONTENT_TYPES:
            problems.append(f"format must be one of {', '.join(CONTENT_TYPES)}, got {self.format!r}")
        if not 1 <= self.quality <= 100:
            problems.append(f"quality must be 1-100, got {self.quality}")
        if len(self.background) != 3 or any(not 0 <= c <= 255 for c in self.background):
            problems.append(f"background must be three 0-255 values, got {self.background}")
        if self.max_pixels < 1:
            problems.append(f"max_pixels must be at least 1, got {self.max_pixels}")
        if self.engine not in ENGINES:
            problems.append(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if problems:
            raise ValueError("invalid ThumbnailSpec: " + "; ".join(problems))

    @property
    def extension(self) -> str:
        return FORMAT_EXTENSIONS[self.format][0]

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


@dataclass(frozen=True)
class Thumbnail:
    size: int  # the bound it was made for
    path: Path  # the file written
    width: int
    height: int
    content_type: str  # e.g. image/jpeg


def fit_size(width: int, height: int, bound: int) -> tuple[int, int]:
    """The size of a `width` x `height` image scaled to fit inside `bound` x `bound`.

    Never upscales, and keeps at least 1 px on each side (a 5000 x 5 strip at 256 gives 256 x 1).
    """
    longest = max(width, height)
    if longest <= bound:
        return width, height
    scale = bound / longest
    return max(1, min(bound, round(width * scale))), max(1, min(bound, round(height * scale)))


def megapixels(pixels: int) -> str:
    """A pixel count for error messages: 900000000 -> '900 MP', 12_345_678 -> '12.3 MP', 9999 -> '9999 px'."""
    if pixels < 1_000_000:
        return f"{pixels} px"
    return f"{pixels / 1_000_000:.1f}".removesuffix(".0") + " MP"
