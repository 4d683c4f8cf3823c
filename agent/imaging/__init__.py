"""Thumbnail engine: decode once, write several sizes, upright, sRGB, metadata-free. No cloud knowledge here.

Usage: ``make_thumbnails(Path("photo.jpg"), ThumbnailSpec(sizes=(1024, 256)), out_dir)`` returns one Thumbnail
per size. Decisions and measurements: benchmarks/IMAGING_NOTES.md.
"""

from typing import TYPE_CHECKING, Any

from agent.imaging.spec import CONTENT_TYPES, FORMAT_EXTENSIONS, Thumbnail, ThumbnailSpec

if TYPE_CHECKING:
    from agent.imaging.engine import make_thumbnails


def __getattr__(name: str) -> Any:
    # Pillow (and the engines) load on first use: the names and formats in spec are needed far more often
    # (every key mapping) than the engine, and a no-op 'sync' never decodes an image.
    if name == "make_thumbnails":
        from agent.imaging.engine import make_thumbnails

        return make_thumbnails
    raise AttributeError(name)


__all__ = ["CONTENT_TYPES", "FORMAT_EXTENSIONS", "Thumbnail", "ThumbnailSpec", "make_thumbnails"]
