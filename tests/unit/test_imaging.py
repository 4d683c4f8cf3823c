"""agent.imaging: geometry, orientation, sizes, alpha, formats, privacy, guards, threads.

Every image is generated in tmp_path. Tests taking an ``engine`` run against Pillow and, when the optional
pyvips extra is installed, against pyvips too (skipped otherwise). Colour handling is in test_imaging_colour.py.
"""

from __future__ import annotations

import io
import re
import struct
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, features

import agent.imaging
from agent.errors import ImageError
from agent.imaging import CONTENT_TYPES, FORMAT_EXTENSIONS, Thumbnail, ThumbnailSpec, make_thumbnails

try:
    import pyvips  # noqa: F401

    HAVE_VIPS = True
except (ImportError, OSError):  # OSError: the binding is there but libvips is not
    HAVE_VIPS = False

try:
    import pillow_heif  # noqa: F401

    HAVE_HEIF = True
except ImportError:
    HAVE_HEIF = False

HAVE_AVIF = bool(features.check("avif"))
AVIF = pytest.param("avif", marks=pytest.mark.skipif(not HAVE_AVIF, reason="Pillow built without AVIF"))

ENGINES = [
    "pillow",
    pytest.param("pyvips", marks=pytest.mark.skipif(not HAVE_VIPS, reason="pyvips extra not installed")),
]

RED, WHITE, GREEN, BLUE = (255, 0, 0), (255, 255, 255), (0, 255, 0), (0, 0, 255)


# --- helpers ---------------------------------------------------------------------------------------------------


def save(im: Image.Image, path: Path, **params: Any) -> Path:
    im.save(path, **params)
    return path


def thumbs(source: Path, tmp_path: Path, engine: str = "pillow", **spec: Any) -> list[Thumbnail]:
    return make_thumbnails(source, ThumbnailSpec(engine=engine, **spec), tmp_path / "out")


def opened(thumb: Thumbnail) -> Image.Image:
    im = Image.open(thumb.path)
    im.load()
    return im


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def rgb_at(im: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    return px(im.convert("RGB"), xy)


def px(im: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    """The pixel at `xy` as a tuple of ints, whatever the mode."""
    value = im.getpixel(xy)
    assert value is not None
    return tuple(int(v) for v in value) if isinstance(value, tuple) else (int(value),)


def level(im: Image.Image, xy: tuple[int, int]) -> int:
    """The value of a single-band pixel."""
    (value,) = px(im, xy)
    return value


def upright_test_image(width: int = 48, height: int = 32) -> Image.Image:
    """White, with a red block in the top-left quarter only: every one of the 8 orientations looks different."""
    im = Image.new("RGB", (width, height), WHITE)
    im.paste(RED, (0, 0, width // 2, height // 2))
    return im


# How a camera stores an upright picture for each EXIF orientation (the inverse of what a viewer does), written
# from the EXIF definitions rather than from the engine's table so a wrong table cannot agree with itself.
STORED_AS: dict[int, Callable[[Image.Image], Image.Image]] = {
    1: lambda im: im,
    2: lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),  # row 0 is at the top, column 0 at the right
    3: lambda im: im.transpose(Image.Transpose.ROTATE_180),
    4: lambda im: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
    5: lambda im: im.transpose(Image.Transpose.TRANSPOSE),
    6: lambda im: im.transpose(Image.Transpose.ROTATE_90),  # viewer turns it 90 degrees clockwise
    7: lambda im: im.transpose(Image.Transpose.TRANSVERSE),
    8: lambda im: im.transpose(Image.Transpose.ROTATE_270),  # viewer turns it 90 degrees counter-clockwise
}


def exif_bytes(orientation: int | None = None, gps: bool = False) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    exif[0x010F] = "SecretCam"  # Make
    exif[0x0131] = "leaky-editor 1.0"  # Software
    if gps:
        exif[0x8825] = {1: "N", 2: (52.0, 22.0, 12.0), 3: "E", 4: (4.0, 53.0, 41.0)}  # GPS IFD: lat/lon
    return exif.tobytes()


def oriented_source(tmp_path: Path, orientation: int, container: str) -> Path:
    stored = STORED_AS[orientation](upright_test_image())
    path = tmp_path / f"o{orientation}.{container}"
    if container == "jpg":
        return save(stored, path, quality=95, exif=exif_bytes(orientation))
    if container == "webp":
        return save(stored, path, lossless=True, exif=exif_bytes(orientation))
    return save(stored, path, exif=exif_bytes(orientation))


# --- public API ------------------------------------------------------------------------------------------------


def test_public_constants_match_the_interface() -> None:
    assert FORMAT_EXTENSIONS == {"jpeg": (".jpg", ".jpeg"), "webp": (".webp",), "png": (".png",), "avif": (".avif",)}
    assert CONTENT_TYPES == {"jpeg": "image/jpeg", "webp": "image/webp", "png": "image/png", "avif": "image/avif"}
    spec = ThumbnailSpec()
    assert (spec.sizes, spec.format, spec.quality, spec.progressive) == ((256,), "jpeg", 85, False)
    assert (spec.background, spec.max_pixels, spec.engine) == ((255, 255, 255), 200_000_000, "pillow")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sizes": ()}, "sizes must not be empty"),
        ({"sizes": (256, 0)}, "positive integers"),
        ({"format": "gif"}, "format must be one of"),
        ({"quality": 0}, "quality must be 1-100"),
        ({"background": (0, 0, 300)}, "background"),
        ({"max_pixels": 0}, "max_pixels"),
        ({"engine": "wand"}, "engine must be one of"),
    ],
)
def test_invalid_spec_is_a_value_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ThumbnailSpec(**kwargs)


def test_spec_accepts_lists_from_config_and_stays_hashable() -> None:
    spec = ThumbnailSpec(sizes=[1024, 256], background=[0, 0, 0])  # type: ignore[arg-type]
    assert spec.sizes == (1024, 256) and spec.background == (0, 0, 0)
    assert hash(spec) == hash(ThumbnailSpec(sizes=(1024, 256), background=(0, 0, 0)))


def test_pyvips_engine_without_the_extra_is_a_value_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = save(upright_test_image(), tmp_path / "a.png")
    monkeypatch.setitem(sys.modules, "agent.imaging.vips", None)  # makes the import fail like a missing extra
    # An earlier test's import left the submodule as an attribute, which "from agent.imaging import vips" prefers.
    monkeypatch.delattr(agent.imaging, "vips", raising=False)
    with pytest.raises(ValueError, match="pyvips"):
        thumbs(source, tmp_path, engine="pyvips")


# --- orientation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("container", ["jpg", "png", "webp"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path: Path, engine: str, container: str, orientation: int) -> None:
    source = oriented_source(tmp_path, orientation, container)
    for thumb in thumbs(source, tmp_path, engine, sizes=(1024, 24), format="png"):
        im = opened(thumb)
        w, h = im.size
        assert (w, h) == (thumb.width, thumb.height) == ((48, 32) if thumb.size == 1024 else (24, 16))
        assert close(rgb_at(im, (w // 4, h // 4)), RED, 40), f"top-left not red for orientation {orientation}"
        for corner in [(3 * w // 4, h // 4), (w // 4, 3 * h // 4), (3 * w // 4, 3 * h // 4)]:
            assert close(rgb_at(im, corner), WHITE, 40), f"{corner} not white for orientation {orientation}"
        assert 0x0112 not in im.getexif()


@pytest.mark.parametrize("orientation", [0, 9, 65535])
def test_invalid_orientation_values_are_ignored(tmp_path: Path, orientation: int) -> None:
    source = save(upright_test_image(), tmp_path / "bad.jpg", quality=95, exif=exif_bytes(orientation))
    im = opened(thumbs(source, tmp_path, format="png")[0])
    assert im.size == (48, 32) and close(rgb_at(im, (5, 5)), RED, 40)


# --- sizes -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("ext", ["jpg", "png", "webp"])
def test_several_sizes_in_spec_order(tmp_path: Path, engine: str, ext: str) -> None:
    source = save(upright_test_image(400, 300), tmp_path / f"a.{ext}")
    result = thumbs(source, tmp_path, engine, sizes=(64, 256, 128))
    assert [t.size for t in result] == [64, 256, 128]
    assert [(t.width, t.height) for t in result] == [(64, 48), (256, 192), (128, 96)]
    assert [t.path.name for t in result] == ["64.jpg", "256.jpg", "128.jpg"]
    for t in result:
        assert opened(t).size == (t.width, t.height) and t.content_type == "image/jpeg"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["128.jpg", "256.jpg", "64.jpg"]  # no temp files


def test_each_size_is_made_from_the_previous_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[tuple[int, int], tuple[int, int]]] = []
    real_resize = Image.Image.resize

    def spy(self: Image.Image, size: tuple[int, int], *args: Any, **kwargs: Any) -> Image.Image:
        calls.append((self.size, (size[0], size[1])))
        return real_resize(self, size, *args, **kwargs)

    source = save(upright_test_image(1600, 1200), tmp_path / "a.png")
    monkeypatch.setattr(Image.Image, "resize", spy)
    thumbs(source, tmp_path, sizes=(100, 800, 400))
    ours = [c for c in calls if c[1] in {(800, 600), (400, 300), (100, 75)}]
    assert ours == [((1600, 1200), (800, 600)), ((800, 600), (400, 300)), ((400, 300), (100, 75))]


def test_duplicate_sizes_give_one_file_listed_twice(tmp_path: Path) -> None:
    source = save(upright_test_image(400, 300), tmp_path / "a.png")
    a, b = thumbs(source, tmp_path, sizes=(128, 128))
    assert a == b and a.path.exists() and (a.width, a.height) == (128, 96)


@pytest.mark.parametrize("engine", ENGINES)
def test_never_upscaled(tmp_path: Path, engine: str) -> None:
    source = save(upright_test_image(100, 50), tmp_path / "small.png")
    for t in thumbs(source, tmp_path, engine, sizes=(1024, 256, 100, 60)):
        assert opened(t).size == (t.width, t.height)
        assert t.width * t.height <= 100 * 50
    assert [(t.width, t.height) for t in thumbs(source, tmp_path, engine, sizes=(1024, 60))] == [(100, 50), (60, 30)]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("size", "expected"), [((5000, 5), (256, 1)), ((5, 5000), (1, 256)), ((3000, 1), (256, 1))])
def test_extreme_aspect_ratio_keeps_one_pixel(
    tmp_path: Path, engine: str, size: tuple[int, int], expected: tuple[int, int]
) -> None:
    source = save(Image.new("RGB", size, RED), tmp_path / "strip.png")
    (t,) = thumbs(source, tmp_path, engine, sizes=(256,))
    assert (t.width, t.height) == expected == opened(t).size
    assert close(rgb_at(opened(t), (0, 0)), RED, 30)


# --- alpha -------------------------------------------------------------------------------------------------------


def half_transparent(width: int = 64, height: int = 64) -> Image.Image:
    """Left half opaque red, right half fully transparent (its hidden colour green), a 50 % alpha band between."""
    im = Image.new("RGBA", (width, height), (0, 255, 0, 0))
    im.paste((255, 0, 0, 255), (0, 0, width // 2, height))
    im.paste((0, 0, 255, 128), (0, 0, width, height // 8))
    return im


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("fmt", ["png", "webp", AVIF])
def test_alpha_is_kept(tmp_path: Path, engine: str, fmt: str) -> None:
    source = save(half_transparent(), tmp_path / "a.png")
    im = opened(thumbs(source, tmp_path, engine, sizes=(32,), format=fmt)[0])
    assert im.mode == "RGBA"
    tol = 0 if fmt == "png" else 12
    assert px(im, (28, 20))[3] <= tol  # stays transparent (its RGB may be anything)
    assert close(px(im, (4, 20)), (255, 0, 0, 255), tol + 4)
    assert abs(px(im, (16, 1))[3] - 128) <= tol + 8


@pytest.mark.parametrize("engine", ENGINES)
def test_transparent_pixels_do_not_bleed_into_edges(tmp_path: Path, engine: str) -> None:
    # Downscaling without premultiplied alpha mixes the hidden green into the red edge.
    source = save(half_transparent(400, 400), tmp_path / "a.png")
    for t in thumbs(source, tmp_path, engine, sizes=(200, 20), format="png"):  # 20 is made from 200: both paths
        im = opened(t)
        for x in range(t.width // 2 - 3, t.width // 2 + 3):  # across the edge, where alpha falls to 0
            for y in range(t.height // 3, t.height):  # below the blue band at the top
                r, g, b, a = px(im, (x, y))
                if a >= 8:  # visible at all: must be red, not darkened or tinted by the hidden pixels
                    assert g <= 8 and r >= 230, f"bleeding at {t.size}px, {(x, y)}: {(r, g, b, a)}"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("background", [(255, 255, 255), (0, 0, 255)])
def test_jpeg_flattens_alpha_on_the_background(tmp_path: Path, engine: str, background: tuple[int, int, int]) -> None:
    source = save(half_transparent(), tmp_path / "a.png")
    im = opened(thumbs(source, tmp_path, engine, sizes=(64,), background=background)[0])
    assert im.mode == "RGB"
    assert close(rgb_at(im, (56, 40)), background, 8)  # transparent: the background, not the hidden green
    assert close(rgb_at(im, (8, 40)), RED, 8)
    half = tuple((c * 128 + b * 127) // 255 for b, c in zip(background, BLUE, strict=True))
    assert close(rgb_at(im, (56, 3)), half, 12)  # 50 % blue over the background


# --- formats -----------------------------------------------------------------------------------------------------

FORMATS = ["jpeg", "webp", "png", AVIF]
PIL_NAMES = {"jpeg": "JPEG", "webp": "WEBP", "png": "PNG", "avif": "AVIF"}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_output_formats(tmp_path: Path, engine: str, fmt: str) -> None:
    source = save(upright_test_image(200, 100), tmp_path / "a.png")
    (t,) = thumbs(source, tmp_path, engine, sizes=(100,), format=fmt)
    im = opened(t)
    assert im.format == PIL_NAMES[fmt] and t.content_type == CONTENT_TYPES[fmt]
    assert t.path.suffix == FORMAT_EXTENSIONS[fmt][0] and im.size == (100, 50)
    assert close(rgb_at(im, (10, 10)), RED, 40) and close(rgb_at(im, (90, 40)), WHITE, 40)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("fmt", ["jpeg", "webp", AVIF])
def test_quality_changes_the_file(tmp_path: Path, engine: str, fmt: str) -> None:
    noisy = Image.effect_noise((256, 256), 60).convert("RGB")
    source = save(noisy, tmp_path / "noise.png")
    low = thumbs(source, tmp_path / "low", engine, sizes=(256,), format=fmt, quality=20)[0]
    high = thumbs(source, tmp_path / "high", engine, sizes=(256,), format=fmt, quality=95)[0]
    assert low.path.stat().st_size < high.path.stat().st_size * 0.7


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("progressive", [False, True])
def test_progressive_jpeg_option(tmp_path: Path, engine: str, progressive: bool) -> None:
    source = save(upright_test_image(300, 200), tmp_path / "a.png")
    im = opened(thumbs(source, tmp_path, engine, sizes=(200,), progressive=progressive)[0])
    assert bool(im.info.get("progressive")) is progressive


@pytest.mark.parametrize("engine", ENGINES)
def test_webp_size_limit_is_an_image_error(tmp_path: Path, engine: str) -> None:
    source = save(Image.new("RGB", (20_000, 4), RED), tmp_path / "long.png")
    with pytest.raises(ImageError, match="at most 16383 px"):
        thumbs(source, tmp_path, engine, sizes=(20_000,), format="webp")
    assert list((tmp_path / "out").iterdir()) == []  # no temp file left behind


# --- privacy -----------------------------------------------------------------------------------------------------

XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description GPSLatitude="52,22N"/></rdf:RDF></x:xmpmeta>'


def metadata_rich_source(tmp_path: Path, container: str) -> Path:
    im = upright_test_image(120, 80)
    path = tmp_path / f"meta.{container}"
    if container == "jpg":
        return save(im, path, exif=exif_bytes(1, gps=True), xmp=XMP, comment=b"secret comment", quality=95)
    if container == "webp":
        return save(im, path, exif=exif_bytes(1, gps=True), xmp=XMP, lossless=True)
    info = __import__("PIL.PngImagePlugin", fromlist=["PngInfo"]).PngInfo()
    info.add_text("Comment", "secret comment")
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    return save(im, path, exif=exif_bytes(1, gps=True), pnginfo=info)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("container", ["jpg", "png", "webp"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_no_metadata_reaches_a_thumbnail(tmp_path: Path, engine: str, container: str, fmt: str) -> None:
    source = metadata_rich_source(tmp_path, container)
    assert b"SecretCam" in source.read_bytes() and Image.open(source).getexif().get_ifd(0x8825)  # the source has it
    for t in thumbs(source, tmp_path, engine, sizes=(60, 120), format=fmt):
        data = t.path.read_bytes()
        for marker in (b"GPS", b"SecretCam", b"leaky-editor", b"Exif", b"xmpmeta", b"secret comment", b"52,22N"):
            assert marker not in data, f"{marker!r} leaked into {t.path.name}"
        im = opened(t)
        assert len(im.getexif()) == 0
        assert not {"exif", "xmp", "XML:com.adobe.xmp", "comment", "Comment", "icc_profile"} & set(im.info)


# --- which engine decodes what ------------------------------------------------------------------------------------


@pytest.mark.skipif(not HAVE_VIPS, reason="pyvips extra not installed")
@pytest.mark.parametrize(
    ("name", "vips_decodes"),
    [("a.png", True), ("a.webp", True), ("a.tif", True), ("a.gif", True), ("a.jpg", False), ("a.bmp", False)],
)
def test_pyvips_engine_decodes_png_webp_itself_and_hands_the_rest_to_pillow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, vips_decodes: bool
) -> None:
    import agent.imaging.pillow_engine as pillow_engine

    handed_over: list[Path] = []
    real = pillow_engine.make_thumbnails

    def spy(source: Path, spec: ThumbnailSpec, out_dir: Path) -> list[Thumbnail]:
        handed_over.append(source)
        return real(source, spec, out_dir)

    monkeypatch.setattr(pillow_engine, "make_thumbnails", spy)
    source = save(upright_test_image(80, 60), tmp_path / name)
    (t,) = thumbs(source, tmp_path, "pyvips", sizes=(40,))
    assert (t.width, t.height) == (40, 30) and close(rgb_at(opened(t), (5, 5)), RED, 40)
    assert handed_over == ([] if vips_decodes else [source])


# --- animation and HEIC ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("container", ["gif", "webp", "png"])
def test_animated_input_uses_the_first_frame(tmp_path: Path, engine: str, container: str) -> None:
    frames = [Image.new("RGB", (40, 30), colour) for colour in (RED, GREEN, BLUE)]
    source = tmp_path / f"anim.{container}"
    extra: dict[str, Any] = {"lossless": True} if container == "webp" else {}
    frames[0].save(source, save_all=True, append_images=frames[1:], duration=100, loop=0, **extra)
    assert getattr(Image.open(source), "n_frames", 1) == 3
    im = opened(thumbs(source, tmp_path, engine, sizes=(20,), format="png")[0])
    assert im.size == (20, 15) and close(rgb_at(im, (10, 7)), RED, 10)


@pytest.mark.skipif(not HAVE_HEIF, reason="pillow-heif extra not installed")
@pytest.mark.parametrize("engine", ENGINES)
def test_heic_input_is_upright(tmp_path: Path, engine: str) -> None:
    source = save(STORED_AS[6](upright_test_image(96, 64)), tmp_path / "a.heic", exif=exif_bytes(6), quality=90)
    for t in thumbs(source, tmp_path, engine, sizes=(48, 96), format="png"):
        im = opened(t)
        assert im.size == ((96, 64) if t.size == 96 else (48, 32))
        assert close(rgb_at(im, (im.width // 4, im.height // 4)), RED, 40)
        assert close(rgb_at(im, (3 * im.width // 4, 3 * im.height // 4)), WHITE, 40)


@pytest.mark.skipif(not HAVE_AVIF, reason="Pillow built without AVIF")
@pytest.mark.parametrize("engine", ENGINES)
def test_avif_input(tmp_path: Path, engine: str) -> None:
    source = save(upright_test_image(96, 64), tmp_path / "a.avif", quality=90)
    im = opened(thumbs(source, tmp_path, engine, sizes=(48,))[0])
    assert im.size == (48, 32) and close(rgb_at(im, (6, 6)), RED, 40)


# --- guards ------------------------------------------------------------------------------------------------------


def jpeg_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    upright_test_image(*size).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def with_jpeg_header_size(data: bytes, width: int, height: int) -> bytes:
    """The same JPEG with a SOF0 header claiming another size (what a decompression bomb does)."""
    out = bytearray(data)
    sof = out.find(b"\xff\xc0")
    out[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(out)


def png_bytes_with_size(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.jpg", b"", "empty file (0 bytes)"),
        ("notes.jpg", b"these are my holiday notes, not a photo\n" * 20, "not an image"),
        ("fake.png", b"%PDF-1.7\n" + b"0" * 500, "not an image"),
        ("zero.png", png_bytes_with_size(0, 0), "corrupt PNG header"),
        ("zero.gif", b"GIF89a\0\0\0\0\0\0\0;", "corrupt GIF header"),
    ],
)
def test_bad_files_are_image_errors(tmp_path: Path, engine: str, name: str, content: bytes, reason: str) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    with pytest.raises(ImageError, match=re.escape(reason)) as caught:
        thumbs(source, tmp_path, engine)
    assert caught.value.kind == "item"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("ext", ["jpg", "png", "webp"])
def test_truncated_files_are_image_errors(tmp_path: Path, engine: str, ext: str) -> None:
    noisy = Image.effect_noise((300, 200), 50).convert("RGB")
    full = save(noisy, tmp_path / f"full.{ext}")
    data = full.read_bytes()
    source = tmp_path / f"cut.{ext}"
    source.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageError, match="truncated|corrupt"):
        thumbs(source, tmp_path, engine, sizes=(100,))
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("engine", ENGINES)
def test_missing_file_is_an_image_error(tmp_path: Path, engine: str) -> None:
    with pytest.raises(ImageError, match="file not found"):
        thumbs(tmp_path / "gone.jpg", tmp_path, engine)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_decompression_bomb_is_refused_from_the_header(tmp_path: Path, engine: str, ext: str) -> None:
    source = tmp_path / f"bomb.{ext}"
    bomb = with_jpeg_header_size(jpeg_bytes(), 30000, 30000) if ext == "jpg" else png_bytes_with_size(30000, 30000)
    source.write_bytes(bomb)
    with pytest.raises(ImageError) as caught:
        thumbs(source, tmp_path, engine)
    assert str(caught.value) == (
        "image too large: 30000x30000 = 900 MP exceeds thumbnails.max_pixels (200 MP); possible decompression bomb"
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_max_pixels_is_configurable(tmp_path: Path, engine: str) -> None:
    source = save(upright_test_image(100, 100), tmp_path / "a.png")
    assert thumbs(source, tmp_path, engine, max_pixels=10_000)[0].width == 100
    with pytest.raises(ImageError, match=r"100x100 = 10000 px exceeds thumbnails.max_pixels \(9999 px\)"):
        thumbs(source, tmp_path, engine, max_pixels=9_999)


def test_our_limit_not_pillows_decides(tmp_path: Path) -> None:
    # 180 MP is over Pillow's process-wide default limit (179 MP) but under thumbnails.max_pixels (200 MP), so the
    # file must pass. (Its scan data is short: libjpeg fills the missing blocks, as browsers do.)
    source = tmp_path / "big.jpg"
    source.write_bytes(with_jpeg_header_size(jpeg_bytes(), 15000, 12000))
    (t,) = thumbs(source, tmp_path)
    assert (t.width, t.height) == (256, 205) == opened(t).size
    with pytest.raises(ImageError, match=r"= 180000000 px exceeds thumbnails.max_pixels \(179999999 px\)"):
        thumbs(source, tmp_path, max_pixels=179_999_999)


# --- threads -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_concurrent_calls_do_not_interfere(tmp_path: Path, engine: str) -> None:
    sources = [oriented_source(tmp_path, o, ext) for o in (1, 3, 6, 8) for ext in ("jpg", "png")]
    failures: list[str] = []

    def work(i: int, source: Path) -> None:
        for _ in range(3):
            spec = ThumbnailSpec(sizes=(24,), format="png", engine=engine)
            im = opened(make_thumbnails(source, spec, tmp_path / f"t{i}")[0])
            if im.size != (24, 16) or not close(rgb_at(im, (6, 4)), RED, 40):
                failures.append(f"{source.name}: {im.size} {rgb_at(im, (6, 4))}")

    threads = [threading.Thread(target=work, args=(i, s)) for i, s in enumerate(sources)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


# --- WebP: the frame libwebp returns is used without Pillow's copy ----------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_webp_frame_is_mapped_not_copied_and_equals_pillows_decode(tmp_path: Path, mode: str) -> None:
    from agent.imaging.decode import decode

    noise = Image.effect_noise((97, 61), 80).convert("L")
    im = Image.merge("RGB", (noise, noise.rotate(90, expand=False), noise.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    if mode == "RGBA":
        im.putalpha(noise.point(lambda v: 255 - v))
    source = save(im, tmp_path / "a.webp", lossless=True)
    with source.open("rb") as fp:
        decoded = decode(fp, max_pixels=10**9, largest_bound=256)
    assert decoded.image.readonly, "the frame should be mapped over libwebp's buffer, not copied"
    assert decoded.image.mode == ("RGBX" if mode == "RGB" else "RGBA")
    with Image.open(source) as reference:
        expected = reference.convert(mode).tobytes()
    assert decoded.image.convert(mode).tobytes() == expected
    # And the thumbnail comes out in the right mode with the same pixels (no resize at this size).
    [thumb] = thumbs(source, tmp_path, sizes=(256,), format="png")
    with Image.open(thumb.path) as out:
        assert out.mode == mode and out.tobytes() == expected


def test_webp_fast_path_steps_aside_when_pillows_plugin_changes() -> None:
    from types import SimpleNamespace

    from agent.imaging.decode import _webp_first_frame

    # What a future plugin might look like: no _decoder, or a rawmode we do not know. Pillow's own load() runs then.
    assert _webp_first_frame(SimpleNamespace(rawmode="RGBX")) is None  # type: ignore[arg-type]
    assert _webp_first_frame(SimpleNamespace(rawmode="YUV", _decoder=SimpleNamespace(get_next=lambda: None))) is None  # type: ignore[arg-type]


def test_a_failed_encode_leaves_neither_the_thumbnail_nor_a_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.imaging.encode import write

    spec = ThumbnailSpec(sizes=(64,))
    write(Image.new("RGB", (64, 48), "red"), tmp_path / "ok.jpg", spec)
    assert [p.name for p in tmp_path.iterdir()] == ["ok.jpg"]  # written whole: no temp file beside it

    def broken_save(self: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        fp.write(b"\xff\xd8 half a JPEG")
        raise ValueError("encoder gave up")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(ImageError, match="cannot encode jpeg thumbnail"):
        write(Image.new("RGB", (64, 48), "red"), tmp_path / "bad.jpg", spec)
    assert [p.name for p in tmp_path.iterdir()] == ["ok.jpg"]
