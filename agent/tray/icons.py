"""The tray icons, drawn with Pillow at run time: one per state, readable from 16 to 32 px.

Each icon is a photo-tile (rounded square) with a dark outline around a
mid-luminance fill, so it stands out on light panels (the outline) and on dark
ones (the fill), and a glyph that differs per state so colour is never the
only cue (colour-blind users, monochrome panels).
"""

from __future__ import annotations

from functools import lru_cache

from PIL import Image, ImageDraw

ICON_STATES = ("idle", "working", "paused", "offline", "error", "starting", "stopped")

# Fill colours: each at least 3:1 against a #1e1e1e panel; the outline carries the contrast on light panels.
FILLS = {
    "idle": (46, 157, 79),  # green: all caught up
    "working": (47, 127, 224),  # blue: moving data
    "paused": (242, 183, 5),  # amber: waiting for the user
    "offline": (138, 144, 153),  # grey: cannot reach the backend
    "error": (217, 48, 37),  # red: needs attention
    "starting": (138, 144, 153),
    "stopped": (98, 104, 112),
}
OUTLINE = (24, 24, 24)
WHITE = (255, 255, 255)
DARK = (24, 24, 24)
BASE = 64  # the size pystray gets; panels scale it down
_SUPERSAMPLE = 4  # draw large and downscale: smooth edges without a vector library


def render(state: str, size: int = BASE) -> Image.Image:
    """The RGBA icon for ``state`` at ``size`` x ``size`` pixels (unknown states draw as 'offline')."""
    return _render(state if state in FILLS else "offline", size).copy()


@lru_cache(maxsize=64)
def _render(state: str, size: int) -> Image.Image:
    s = BASE * _SUPERSAMPLE
    im = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    u = _SUPERSAMPLE  # one unit = one pixel of the 64 px icon
    d.rounded_rectangle((2 * u, 2 * u, 62 * u, 62 * u), radius=14 * u, fill=FILLS[state], outline=OUTLINE, width=5 * u)
    _GLYPHS[state](d, u)
    return im.resize((size, size), Image.Resampling.LANCZOS)


def _check(d: ImageDraw.ImageDraw, u: int) -> None:
    _stroke(d, [(17 * u, 33 * u), (28 * u, 44 * u), (47 * u, 21 * u)], 8 * u)


def _arrows(d: ImageDraw.ImageDraw, u: int) -> None:
    # Up arrow (upload) on the left, down arrow (pull) on the right: the two directions data moves.
    d.polygon([(22 * u, 13 * u), (34 * u, 27 * u), (10 * u, 27 * u)], fill=WHITE, outline=DARK, width=2 * u)
    d.rectangle((18 * u, 26 * u, 26 * u, 50 * u), fill=WHITE, outline=DARK, width=2 * u)
    d.polygon([(42 * u, 51 * u), (54 * u, 37 * u), (30 * u, 37 * u)], fill=WHITE, outline=DARK, width=2 * u)
    d.rectangle((38 * u, 14 * u, 46 * u, 38 * u), fill=WHITE, outline=DARK, width=2 * u)


def _pause(d: ImageDraw.ImageDraw, u: int) -> None:
    d.rectangle((19 * u, 16 * u, 28 * u, 48 * u), fill=DARK)
    d.rectangle((36 * u, 16 * u, 45 * u, 48 * u), fill=DARK)


def _offline(d: ImageDraw.ImageDraw, u: int) -> None:
    # A "no connection" sign: ring and slash.
    d.ellipse((15 * u, 15 * u, 49 * u, 49 * u), outline=WHITE, width=7 * u)
    _stroke(d, [(22 * u, 42 * u), (42 * u, 22 * u)], 7 * u)


def _error(d: ImageDraw.ImageDraw, u: int) -> None:
    d.rounded_rectangle((27 * u, 12 * u, 37 * u, 38 * u), radius=3 * u, fill=WHITE)
    d.ellipse((26.5 * u, 42 * u, 37.5 * u, 53 * u), fill=WHITE)


def _starting(d: ImageDraw.ImageDraw, u: int) -> None:
    for x in (14, 28, 42):
        d.ellipse((x * u, 26 * u, (x + 9) * u, 35 * u), fill=WHITE)


def _stopped(d: ImageDraw.ImageDraw, u: int) -> None:
    d.rounded_rectangle((20 * u, 20 * u, 44 * u, 44 * u), radius=3 * u, fill=WHITE)


def _stroke(d: ImageDraw.ImageDraw, points: list[tuple[int, int]], width: int) -> None:
    d.line(points, fill=WHITE, width=width, joint="curve")
    r = width // 2
    for x, y in (points[0], points[-1]):
        d.ellipse((x - r, y - r, x + r, y + r), fill=WHITE)


_GLYPHS = {
    "idle": _check,
    "working": _arrows,
    "paused": _pause,
    "offline": _offline,
    "error": _error,
    "starting": _starting,
    "stopped": _stopped,
}


def contact_sheet(
    sizes: tuple[int, ...] = (16, 22, 24, 32, 48), backgrounds: tuple[str, ...] = ("#f5f5f5", "#1e1e1e")
) -> Image.Image:
    """Every state at every size on light and dark panels, for a person to look at (e2e artifacts)."""
    pad = 6
    cell = max(sizes) + pad
    width = pad + len(ICON_STATES) * cell
    rows = [(bg, s) for bg in backgrounds for s in sizes]
    sheet = Image.new("RGB", (width, sum(s + pad for _bg, s in rows) + pad), "#808080")
    draw = ImageDraw.Draw(sheet)
    y = pad // 2
    for bg, s in rows:
        draw.rectangle((0, y, width, y + s + pad), fill=bg)
        for c, state in enumerate(ICON_STATES):
            icon = render(state, s)
            sheet.paste(icon, (pad + c * cell, y + pad // 2), icon)
        y += s + pad
    return sheet
