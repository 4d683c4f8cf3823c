"""Thumbnail engine: decode once, write several sizes, upright, sRGB, metadata-free. No cloud knowledge here.

Usage: ``make_thumbnails(Path("photo.jpg"), ThumbnailSpec(sizes=(1024, 256)), out_dir)`` returns one Thumbnail
per size. Decisions and measurements: benchmarks/IMAGING_NOTES.md.
"""

from agent.imaging.engine import make_thumbnails
from agent.imaging.spec import CONTENT_TYPES, FORMAT_EXTENSIONS, Thumbnail, ThumbnailSpec

__all__ = ["CONTENT_TYPES", "FORMAT_EXTENSIONS", "Thumbnail", "ThumbnailSpec", "make_thumbnails"]
