"""agent.imaging colour handling: CMYK/YCCK, 16-bit, palette, grey+alpha, ICC profiles to sRGB.

ICC profiles (Adobe RGB 1998, Display P3) are built here byte by byte from their published primaries, and the
expected sRGB values are computed with plain matrix maths, independently of LittleCMS.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageCms

from agent.imaging import Thumbnail, ThumbnailSpec, make_thumbnails
from tests.unit.test_imaging import level, px

try:
    import pyvips  # noqa: F401

    HAVE_VIPS = True
except (ImportError, OSError):
    HAVE_VIPS = False

ENGINES = [
    "pillow",
    pytest.param("pyvips", marks=pytest.mark.skipif(not HAVE_VIPS, reason="pyvips extra not installed")),
]


def thumb(source: Path, tmp_path: Path, engine: str = "pillow", **spec: Any) -> tuple[Thumbnail, Image.Image]:
    t = make_thumbnails(source, ThumbnailSpec(engine=engine, **spec), tmp_path / "out")[0]
    im = Image.open(t.path)
    im.load()
    return t, im


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


# --- ICC profiles and reference maths ------------------------------------------------------------------------------

D50 = (0.9642, 1.0, 0.8249)
# Colorants adapted to D50 (the PCS), as found in the published profiles.
ADOBE_RGB = ((0.60974, 0.31111, 0.01947), (0.20528, 0.62567, 0.06087), (0.14919, 0.06322, 0.74457))
DISPLAY_P3 = ((0.51512, 0.24120, -0.00105), (0.29198, 0.69225, 0.04189), (0.15710, 0.06657, 0.78407))
SRGB = ((0.43607, 0.22249, 0.01392), (0.38515, 0.71687, 0.09708), (0.14307, 0.06061, 0.71410))
ADOBE_GAMMA = 563 / 256  # 2.19921875, stored as u8Fixed8
SRGB_CURVE = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)  # ICC parametric curve type 3


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz(v: tuple[float, float, float]) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15(c) for c in v)


def _desc(text: str) -> bytes:
    ascii_text = text.encode() + b"\0"
    return b"desc\0\0\0\0" + struct.pack(">I", len(ascii_text)) + ascii_text + b"\0" * 8 + b"\0\0\0" + b"\0" * 67


def matrix_profile(name: str, colorants: tuple[tuple[float, float, float], ...], gamma: float | None) -> bytes:
    """A minimal ICC v2 RGB display profile: colorant matrix plus one tone curve (gamma, or the sRGB curve)."""
    if gamma is not None:
        trc = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    else:
        trc = b"para\0\0\0\0" + struct.pack(">HH", 3, 0) + b"".join(_s15(v) for v in SRGB_CURVE)
    tags = [
        (b"desc", _desc(name)),
        (b"cprt", b"text\0\0\0\0test profile\0"),
        (b"wtpt", _xyz(D50)),
        (b"rXYZ", _xyz(colorants[0])),
        (b"gXYZ", _xyz(colorants[1])),
        (b"bXYZ", _xyz(colorants[2])),
        (b"rTRC", trc),
        (b"gTRC", trc),
        (b"bTRC", trc),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"\0" * 24
        + struct.pack(">I", 0)
        + b"".join(_s15(c) for c in D50)
        + b"\0" * 48
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def srgb_decode(v: float) -> float:
    return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4


def srgb_encode(v: float) -> float:
    v = min(max(v, 0.0), 1.0)
    return v * 12.92 if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055


Matrix = tuple[tuple[float, float, float], ...]


def solve3(columns: Matrix, rhs: list[float]) -> list[float]:
    """x with sum(x[j] * columns[j]) == rhs (Cramer's rule; the matrix is given by its columns)."""

    def det(c: Matrix) -> float:
        (a, d, g), (b, e, h), (cc, f, i) = c
        return a * (e * i - f * h) - b * (d * i - f * g) + cc * (d * h - e * g)

    whole = det(columns)
    rhs_t = (rhs[0], rhs[1], rhs[2])
    return [det(tuple(rhs_t if k == j else columns[k] for k in range(3))) / whole for j in range(3)]


def expected_srgb(rgb: tuple[int, int, int], colorants: Matrix, gamma: float | None) -> tuple[int, ...]:
    """What an exact colour-managed conversion to sRGB gives (relative colorimetric, both matrix/TRC profiles)."""
    linear = [(c / 255) ** gamma if gamma is not None else srgb_decode(c / 255) for c in rgb]
    xyz = [sum(linear[j] * colorants[j][row] for j in range(3)) for row in range(3)]
    srgb_linear = solve3(SRGB, xyz)
    return tuple(round(srgb_encode(v) * 255) for v in srgb_linear)


def test_reference_maths_is_sane() -> None:
    # sRGB colorants through the same maths must give the input back.
    assert expected_srgb((120, 160, 90), SRGB, None) == (120, 160, 90)


# --- ICC -------------------------------------------------------------------------------------------------------------

PROFILES = {
    "adobe-rgb": (ADOBE_RGB, ADOBE_GAMMA),
    "display-p3": (DISPLAY_P3, None),
}
COLOURS = [(120, 160, 90), (180, 120, 90), (60, 90, 170)]


def colour_patches(colours: list[tuple[int, int, int]], mode: str = "RGB") -> Image.Image:
    im = Image.new(mode, (32 * len(colours), 32))
    for i, c in enumerate(colours):
        im.paste(c + ((255,) if mode == "RGBA" else ()), (32 * i, 0, 32 * i + 32, 32))
    return im


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("container", ["png", "jpg", "webp", "tif"])
def test_embedded_profile_is_converted_to_srgb(tmp_path: Path, engine: str, profile: str, container: str) -> None:
    colorants, gamma = PROFILES[profile]
    icc = matrix_profile(profile, colorants, gamma)
    source = tmp_path / f"tagged.{container}"
    extra: dict[str, Any] = {"quality": 97} if container == "jpg" else {"lossless": True} if container == "webp" else {}
    colour_patches(COLOURS).save(source, icc_profile=icc, **extra)
    t, im = thumb(source, tmp_path, engine, sizes=(96,), format="png")
    assert "icc_profile" not in im.info  # decision: thumbnails are untagged sRGB
    tol = 6 if container == "jpg" else 3
    for i, c in enumerate(COLOURS):
        want = expected_srgb(c, colorants, gamma)
        got = px(im.convert("RGB"), (32 * i + 16, 16))
        assert close(got, want, tol), f"{profile} {c}: got {got}, want {want}"
        assert not close(want, c, 4), "test colour must change noticeably between the spaces"


@pytest.mark.parametrize("engine", ENGINES)
def test_profile_conversion_keeps_alpha(tmp_path: Path, engine: str) -> None:
    icc = matrix_profile("adobe-rgb", ADOBE_RGB, ADOBE_GAMMA)
    im = colour_patches([(120, 160, 90)], "RGBA")
    im.putalpha(Image.linear_gradient("L").resize(im.size).transpose(Image.Transpose.ROTATE_90))
    source = tmp_path / "tagged-alpha.png"
    im.save(source, icc_profile=icc)
    _, out = thumb(source, tmp_path, engine, sizes=(32,), format="png")
    assert out.mode == "RGBA"
    r, g, b, a = px(out, (16, 16))
    assert close((r, g, b), expected_srgb((120, 160, 90), ADOBE_RGB, ADOBE_GAMMA), 3)
    assert abs(a - px(im, (16, 16))[3]) <= 3


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("icc", ["srgb", "garbage"])
def test_srgb_or_broken_profiles_leave_pixels_alone(tmp_path: Path, engine: str, icc: str) -> None:
    data = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes() if icc == "srgb" else b"not icc" * 30
    source = tmp_path / "a.png"
    colour_patches(COLOURS).save(source, icc_profile=data)
    _, im = thumb(source, tmp_path, engine, sizes=(96,), format="png")
    for i, c in enumerate(COLOURS):
        assert close(px(im.convert("RGB"), (32 * i + 16, 16)), c, 2)


# --- CMYK and YCCK -------------------------------------------------------------------------------------------------

CMYK_COLOURS = [(30, 160, 220, 40), (0, 0, 0, 0), (200, 20, 10, 100), (0, 0, 0, 255)]


def naive_rgb(cmyk: tuple[int, int, int, int]) -> tuple[int, ...]:
    c, m, y, k = cmyk
    return tuple(round((255 - v) * (255 - k) / 255) for v in (c, m, y))


def cmyk_patches(colours: Sequence[tuple[int, ...]]) -> Image.Image:
    im = Image.new("CMYK", (32 * len(colours), 32))
    for i, c in enumerate(colours):
        im.paste(c, (32 * i, 0, 32 * i + 32, 32))
    return im


def ycck_jpeg(colours: list[tuple[int, int, int, int]]) -> bytes:
    """An Adobe YCCK JPEG (APP14 transform 2), as Photoshop writes CMYK: inverted CMY stored as YCbCr, plus K.

    Pillow cannot write YCCK, so write the YCCK components as plain (inverted) CMYK and flip the transform flag.
    """
    stored = []
    for c, m, y, k in colours:
        # libjpeg decodes YCCK by YCbCr->RGB on the first three components and inverting the result, so store the
        # YCbCr of (c, m, y); Pillow then writes every component inverted (Adobe style), hence the 255 - x.
        yy = 0.299 * c + 0.587 * m + 0.114 * y
        cb = 128 - 0.168736 * c - 0.331264 * m + 0.5 * y
        cr = 128 + 0.5 * c - 0.418688 * m - 0.081312 * y
        stored.append(tuple(255 - round(v) for v in (yy, cb, cr)) + (k,))
    buf = io.BytesIO()
    cmyk_patches(stored).save(buf, "JPEG", quality=98)
    data = bytearray(buf.getvalue())
    adobe = data.find(b"Adobe")
    assert adobe > 0 and data[adobe + 11] == 0
    data[adobe + 11] = 2  # transform: YCCK
    return bytes(data)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["cmyk", "ycck"])
def test_cmyk_and_ycck_jpegs(tmp_path: Path, engine: str, kind: str) -> None:
    source = tmp_path / f"{kind}.jpg"
    if kind == "cmyk":
        cmyk_patches(CMYK_COLOURS).save(source, "JPEG", quality=98)  # Adobe APP14, inverted, like Photoshop
    else:
        source.write_bytes(ycck_jpeg(CMYK_COLOURS))
    decoded = Image.open(source)
    assert decoded.mode == "CMYK" and decoded.info.get("adobe_transform") == (0 if kind == "cmyk" else 2)
    _, im = thumb(source, tmp_path, engine, sizes=(256,), format="png")
    assert im.mode == "RGB"
    for i, c in enumerate(CMYK_COLOURS):
        got = px(im, (32 * i + 16, 16))
        assert close(got, naive_rgb(c), 6), f"{kind} {c}: got {got}, want {naive_rgb(c)}"


# --- bit depth, palette, grey ---------------------------------------------------------------------------------------


def gradient16(width: int = 512, height: int = 8) -> Image.Image:
    """A horizontal ramp over the whole 16-bit range, 0 to 65535."""
    row = struct.pack(f"<{width}H", *(round(65535 * x / (width - 1)) for x in range(width)))
    return Image.frombytes("I;16", (width, height), row * height)


def row_values(im: Image.Image, y: int) -> list[int]:
    grey = im.convert("L")
    return [level(grey, (x, y)) for x in range(grey.width)]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("container", ["png", "tif"])
def test_16_bit_grey_keeps_its_tonal_range(tmp_path: Path, engine: str, container: str) -> None:
    source = tmp_path / f"g16.{container}"
    gradient16().save(source)
    assert Image.open(source).mode.startswith("I;16")
    assert px(Image.open(source).convert("RGB"), (256, 4)) == (255, 255, 255)  # what naive code would get
    _, im = thumb(source, tmp_path, engine, sizes=(512,), format="png")
    values = row_values(im, 4)
    assert min(values) <= 2 and max(values) >= 253
    assert abs(values[256] - 128) <= 3  # the middle of the ramp is mid-grey
    assert values == sorted(values)  # still a ramp, no wrap-around


def test_float_images_are_scaled(tmp_path: Path) -> None:
    ramp = struct.pack("=256f", *(x / 255 for x in range(256)))  # 0.0 .. 1.0
    source = tmp_path / "float.tif"
    Image.frombytes("F", (256, 4), ramp * 4).save(source)
    _, im = thumb(source, tmp_path, sizes=(256,), format="png")
    values = row_values(im, 2)
    assert min(values) <= 1 and max(values) >= 254 and abs(values[128] - 128) <= 2


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("container", ["png", "gif"])
def test_palette_with_transparency(tmp_path: Path, engine: str, container: str) -> None:
    im = Image.new("P", (40, 20), 0)
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    im.paste(1, (0, 0, 20, 20))  # red left, transparent (index 0) right
    im.paste(2, (0, 0, 40, 4))  # blue top stripe
    source = tmp_path / f"pal.{container}"
    im.save(source, transparency=0)
    _, out = thumb(source, tmp_path, engine, sizes=(40,), format="png")
    rgba = out.convert("RGBA")
    assert close(px(rgba, (10, 12)), (255, 0, 0, 255), 2)
    assert px(rgba, (30, 12))[3] == 0
    assert close(px(rgba, (30, 1)), (0, 0, 255, 255), 2)
    _, flat = thumb(source, tmp_path, engine, sizes=(40,), format="jpeg", background=(0, 255, 0))
    assert close(px(flat.convert("RGB"), (30, 12)), (0, 255, 0), 10)


@pytest.mark.parametrize("engine", ENGINES)
def test_grey_with_alpha(tmp_path: Path, engine: str) -> None:
    im = Image.new("LA", (40, 20), (200, 0))
    im.paste((60, 255), (0, 0, 20, 20))
    source = tmp_path / "la.png"
    im.save(source)
    _, png = thumb(source, tmp_path, engine, sizes=(40,), format="png")
    assert png.mode in ("LA", "RGBA")
    rgba = png.convert("RGBA")
    assert close(px(rgba, (10, 10)), (60, 60, 60, 255), 1) and px(rgba, (30, 10))[3] == 0
    _, jpg = thumb(source, tmp_path, engine, sizes=(40,), format="jpeg", background=(255, 255, 255))
    assert jpg.mode == "L"  # grey stays grey on a grey background
    assert abs(level(jpg, (30, 10)) - 255) <= 4 and abs(level(jpg, (10, 10)) - 60) <= 4


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", ["L", "1"])
def test_grey_and_bilevel_sources(tmp_path: Path, engine: str, mode: str) -> None:
    im = Image.new(mode, (40, 20), 0)
    im.paste(255, (0, 0, 20, 20))
    source = tmp_path / f"{mode}.png"
    im.save(source)
    _, out = thumb(source, tmp_path, engine, sizes=(40,), format="jpeg")
    assert out.mode == "L"
    assert level(out, (10, 10)) >= 250 and level(out, (30, 10)) <= 5
