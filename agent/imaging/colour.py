"""Colour handling for the Pillow engine: every source ends up as 8-bit sRGB (L, LA, RGB or RGBA).

Two steps, so the expensive one runs on few pixels:

* ``to_working`` (before resizing) turns exotic modes into ones Pillow resamples correctly: palette and
  colour-keyed transparency become real alpha, 16-bit and float greys are scaled to 8 bits (``convert("L")``
  alone clips everything above 255 to white), LAB becomes RGB. CMYK stays CMYK: it resamples fine and its
  ICC profile (if any) must see the original ink values.
* ``SrgbConverter`` (after resizing, per thumbnail) applies the embedded ICC profile with LittleCMS
  (``PIL.ImageCms``) to reach sRGB. Thumbnails carry no ICC profile: untagged images are shown as sRGB by
  browsers and viewers, and an embedded sRGB profile would add ~3 KB to a ~10 KB thumbnail.

Resampling in the source's encoded space and converting afterwards differs from the reverse order by rounding
only (both are smooth per-pixel maps), and it is what makes a 24 MP Adobe RGB JPEG cost the same as an sRGB one.
"""

from __future__ import annotations

import io

from PIL import Image, ImageCms

from agent.errors import ImageError

# Modes that Pillow resamples correctly and that ``SrgbConverter`` understands. RGBX (how libwebp hands over an
# RGB frame, see decode.py) is resampled as is and dropped to RGB after resizing: a full-size copy saved.
WORKING_MODES = ("L", "LA", "RGB", "RGBA", "CMYK", "RGBX")

# Plain relabelling or standard conversions Pillow does correctly.
_SIMPLE = {"1": "L", "La": "LA", "PA": "RGBA", "RGBa": "RGBA", "YCbCr": "RGB", "HSV": "RGB"}

# ICC colour space signatures (as Pillow reports them) that fit each working mode.
_PROFILE_SPACE = {"L": "GRAY", "LA": "GRAY", "RGB": "RGB", "RGBA": "RGB", "CMYK": "CMYK"}


def to_working(im: Image.Image) -> Image.Image:
    """`im` (loaded) in one of WORKING_MODES, with its tonal range and transparency intact."""
    mode = im.mode
    if mode in ("L", "RGB") and "transparency" in im.info:  # tRNS colour key: make it real alpha
        return im.convert(mode + "A" if mode == "L" else "RGBA")
    if mode in WORKING_MODES:
        return im
    if mode == "P":
        return im.convert("RGBA" if im.has_transparency_data else "RGB")
    if mode in _SIMPLE:
        return im.convert(_SIMPLE[mode])
    if mode.startswith("I") or mode == "F":
        return _grey_to_8bit(im)
    if mode == "LAB":
        lab = ImageCms.createProfile("LAB")
        return ImageCms.profileToProfile(im, lab, ImageCms.createProfile("sRGB"), outputMode="RGB") or im
    raise ImageError(f"unsupported colour mode {mode!r}")


def _grey_to_8bit(im: Image.Image) -> Image.Image:
    """Scale a 16-bit, 32-bit or float greyscale image to 8 bits keeping its tonal range.

    16-bit data (PNG, TIFF: modes I;16*, and I holding 0..65535) maps 0..65535 onto 0..255. Wider integer data
    is scaled by its own maximum. Float data is taken as 0..1 when it fits there, else as 0..255.
    """
    if im.mode == "F":
        scale = 255.0 if _maximum(im) <= 1.0 else 1.0
        return im.point(lambda v: v * scale + 0.5).convert("L")
    wide = im if im.mode == "I" else im.convert("I")
    top = max(65535.0, _maximum(wide))
    # Point with a linear lambda runs in C; +0.5 rounds instead of truncating. convert("L") clips below 0.
    return wide.point(lambda v: v * (255 / top) + 0.5).convert("L")


def _maximum(im: Image.Image) -> float:
    """The largest value of a single-band image."""
    high = im.getextrema()[1]
    return float(high) if isinstance(high, (int, float)) else 0.0


def _profile(icc: bytes | None, mode: str) -> ImageCms.ImageCmsProfile | None:
    """The embedded profile if it is usable and not already sRGB, else None (the pixels are taken as sRGB).

    A damaged or mismatched profile is ignored rather than failing the image: the thumbnail is still useful.
    """
    if not icc:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = profile.profile.xcolor_space.strip()
        description = ImageCms.getProfileDescription(profile)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None
    if space != _PROFILE_SPACE.get(mode):
        return None
    if mode != "CMYK" and "srgb" in description.lower():
        return None  # already sRGB: converting would only cost time
    return profile


class SrgbConverter:
    """Converts resized working images of one source to 8-bit sRGB (L, LA, RGB or RGBA).

    Built once per source (the LittleCMS transform is the costly part) and applied to each thumbnail. Not shared
    between calls, so nothing here is touched by two threads.
    """

    def __init__(self, mode: str, icc: bytes | None) -> None:
        mode = "RGB" if mode == "RGBX" else mode
        self.mode = mode
        self._transform: ImageCms.ImageCmsTransform | None = None
        profile = _profile(icc, mode)
        if profile is None:
            return
        in_mode = "L" if mode == "LA" else mode  # LA is converted as L (see __call__)
        out_mode = "RGBA" if mode == "RGBA" else "RGB"
        try:
            self._transform = ImageCms.buildTransform(
                profile,
                ImageCms.createProfile("sRGB"),
                in_mode,
                out_mode,
                renderingIntent=ImageCms.Intent.PERCEPTUAL,
            )
        except ImageCms.PyCMSError:
            self._transform = None  # LittleCMS refused the profile: treat the pixels as sRGB

    def __call__(self, im: Image.Image) -> Image.Image:
        if im.mode == "RGBX":
            im = im.convert("RGB")
        if self._transform is None:
            return im.convert("RGB") if im.mode == "CMYK" else im  # untagged CMYK: the usual naive inversion
        if im.mode == "LA":  # LittleCMS has no grey+alpha layout: convert the grey, put the alpha back
            out = ImageCms.applyTransform(im.getchannel("L"), self._transform) or im
            out = out.convert("L")
            out.putalpha(im.getchannel("A"))
            return out
        out = ImageCms.applyTransform(im, self._transform) or im
        return out.convert("L") if im.mode == "L" else out


def flatten(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """`im` composited over `background` with no alpha left (for JPEG). Grey stays grey on a grey background."""
    if im.mode not in ("LA", "RGBA"):
        return im
    rgba = im.convert("RGBA")
    base = Image.new("RGB", im.size, background)
    base.paste(rgba, (0, 0), rgba)  # the image's own alpha as the mask: a standard "over" composite
    if im.mode == "LA" and background[0] == background[1] == background[2]:
        return base.convert("L")
    return base
