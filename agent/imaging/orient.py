"""EXIF orientation: read the tag, turn the pixels upright. The tag itself is never written to a thumbnail."""

from __future__ import annotations

import struct

from PIL import Image, ImageFile

ORIENTATION_TAG = 0x0112

# How to turn a stored image upright for each EXIF orientation (2-8; 1 is already upright).
# Orientation n says where the stored first row/column belong, so the fix is the transform that maps them back:
# 2 mirrored, 3 upside down, 4 mirrored upside down, 5 transposed, 6 rotated 90 CW to view, 7 transversed,
# 8 rotated 90 CCW to view.
_UPRIGHT: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def read_orientation(im: ImageFile.ImageFile) -> int:
    """The EXIF orientation (1-8) of a loaded image; 1 when absent, invalid or unreadable.

    A broken EXIF block must not cost the user their thumbnail, so parse errors count as "no tag".
    """
    try:
        value = im.getexif().get(ORIENTATION_TAG, 1)
    except (SyntaxError, ValueError, TypeError, KeyError, IndexError, struct.error, OSError):
        return 1
    if isinstance(value, tuple) and value:  # some writers store it as a one-element array
        value = value[0]
    return value if isinstance(value, int) and value in range(1, 9) else 1


def swaps_axes(orientation: int) -> bool:
    """True when turning upright swaps width and height (orientations 5-8)."""
    return orientation >= 5


def upright(im: Image.Image, orientation: int) -> Image.Image:
    """`im` turned upright for `orientation` (returned as is for 1)."""
    method = _UPRIGHT.get(orientation)
    return im if method is None else im.transpose(method)
