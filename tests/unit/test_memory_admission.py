"""Issue 14 item 16: decode memory estimated from the header, and jobs admitted against worker.max_memory_mb."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from PIL import Image

from agent.errors import ImageError
from agent.imaging import ThumbnailSpec
from agent.imaging.decode import decode
from agent.imaging.memory import MIB, OVERHEAD, draft_scale, estimate, estimate_bytes
from agent.pipeline.admission import MemoryBudget, default_memory_mb, make_admitted
from tests.support import wait_for

SPEC = ThumbnailSpec(sizes=(256,))


# --- the estimate -------------------------------------------------------------------------------------------


def test_a_100_mp_png_needs_about_four_bytes_a_pixel() -> None:
    est = estimate_bytes(10_000, 10_000, "RGB", "PNG", SPEC)
    assert est.scale == 1
    assert 400 * 10**6 <= est.bytes - OVERHEAD <= 540 * 10**6, est.describe()


def test_a_24_mp_jpeg_decodes_at_an_eighth_and_needs_little() -> None:
    est = estimate_bytes(6000, 4000, "RGB", "JPEG", SPEC)
    assert est.scale == 8
    assert est.bytes < OVERHEAD + 10 * MIB, est.describe()
    # The same image as a PNG has no draft: 64 times the pixels.
    assert estimate_bytes(6000, 4000, "RGB", "PNG", SPEC).bytes > 90 * 10**6


def test_bigger_thumbnails_mean_less_draft_and_more_memory() -> None:
    small = estimate_bytes(6000, 4000, "RGB", "JPEG", ThumbnailSpec(sizes=(256,)))
    big = estimate_bytes(6000, 4000, "RGB", "JPEG", ThumbnailSpec(sizes=(2048, 256)))
    assert big.scale == 1 and big.bytes > 4 * small.bytes


def test_modes_converted_before_resizing_count_the_copy() -> None:
    palette = estimate_bytes(5000, 5000, "P", "PNG", SPEC).bytes
    grey = estimate_bytes(5000, 5000, "L", "PNG", SPEC).bytes
    rgb = estimate_bytes(5000, 5000, "RGB", "PNG", SPEC).bytes
    assert grey < rgb < palette  # P: 1 byte a pixel decoded, then a 4-byte RGB(A) copy


@pytest.mark.parametrize(("size", "bound"), [((6000, 4000), 256), ((3000, 2000), 1024), ((1200, 900), 256), ((800, 600), 512)])
def test_draft_scale_is_what_the_decoder_does(size: tuple[int, int], bound: int) -> None:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buf, "JPEG", quality=80)
    buf.seek(0)
    decoded = decode(buf, max_pixels=10**9, largest_bound=bound)
    scale = draft_scale(*size, "JPEG", bound)
    assert decoded.image.size == (-(-size[0] // scale), -(-size[1] // scale))


def test_estimate_reads_the_header_only(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("P", (3000, 2000)).save(path, "PNG")
    est = estimate(path, SPEC)
    assert est is not None
    assert (est.width, est.height, est.mode, est.format) == (3000, 2000, "P", "PNG")
    assert est.bytes == estimate_bytes(3000, 2000, "P", "PNG", SPEC).bytes
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    assert estimate(tmp_path / "junk.png", SPEC) is None


# --- the budget -----------------------------------------------------------------------------------------------


def test_default_budget_from_the_machines_memory() -> None:
    assert default_memory_mb(512) == 256  # half of a tiny box
    assert default_memory_mb(1024) == 512
    assert default_memory_mb(2048) == 512
    assert default_memory_mb(8192) == 2048  # a quarter
    assert default_memory_mb(65536) == 4096  # capped
    assert 256 <= default_memory_mb() <= 4096  # this machine


def start(budget: MemoryBudget, need: int, name: str, order: list[str]) -> tuple[threading.Thread, threading.Event]:
    """A thread that takes ``need`` from the budget, notes it in ``order``, and holds it until its event is set."""
    done = threading.Event()

    def job() -> None:
        with budget.hold(need):
            order.append(name)
            done.wait(10)

    t = threading.Thread(target=job, name=f"job-{name}")
    t.start()
    return t, done


def test_jobs_that_fit_run_together() -> None:
    budget = MemoryBudget(100)
    order: list[str] = []
    a, a_done = start(budget, 40, "a", order)
    b, b_done = start(budget, 50, "b", order)
    wait_for(lambda: len(order) == 2, 5, "both jobs to run")
    assert budget.in_use == 90
    a_done.set(), b_done.set()
    a.join(5), b.join(5)
    assert budget.in_use == 0 and budget.peak == 90


def test_a_big_job_waits_for_the_others_then_runs_alone_and_is_not_overtaken() -> None:
    budget = MemoryBudget(100)
    order: list[str] = []
    small, small_done = start(budget, 30, "small", order)
    wait_for(lambda: order == ["small"], 5, "the small job")
    big, big_done = start(budget, 90, "big", order)
    wait_for(lambda: budget.waiting() == 1, 5, "the big job to wait")
    late, late_done = start(budget, 20, "late", order)  # would fit next to "small": must not overtake "big"
    wait_for(lambda: budget.waiting() == 2, 5, "the late job to queue behind the big one")
    assert order == ["small"]
    small_done.set()
    wait_for(lambda: "big" in order, 5, "the big job to start once the small one is done")
    assert budget.in_use == 90 and budget.waiting() == 1  # alone: "late" does not fit next to it
    big_done.set()
    wait_for(lambda: "late" in order, 5, "the late job once the big one is done")
    assert order == ["small", "big", "late"]
    late_done.set()
    for t in (small, big, late):
        t.join(5)
    assert budget.peak <= 100 and budget.in_use == 0


def test_a_job_larger_than_the_whole_budget_is_refused_naming_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    Image.new("RGB", (4000, 4000)).save(path, "PNG", compress_level=1)
    with pytest.raises(ImageError) as caught:
        make_admitted(MemoryBudget(32 * MIB), path, SPEC, tmp_path / "out", "photos/huge.png")
    text = str(caught.value)
    assert "4000x4000" in text and "worker.max_memory_mb" in text and "32 MB" in text
    assert not (tmp_path / "out").exists()


def test_admitted_jobs_make_their_thumbnails(tmp_path: Path) -> None:
    path = tmp_path / "ok.png"
    Image.new("RGB", (800, 600), (1, 2, 3)).save(path, "PNG")
    budget = MemoryBudget(256 * MIB)
    made = make_admitted(budget, path, SPEC, tmp_path / "out", "ok.png")
    assert [t.size for t in made] == [256]
    assert budget.peak == estimate_bytes(800, 600, "RGB", "PNG", SPEC).bytes and budget.in_use == 0


def test_nonsense_budget() -> None:
    with pytest.raises(ValueError):
        MemoryBudget(0)
    with pytest.raises(ValueError):
        MemoryBudget(10).acquire(11)
