"""Benchmark of the gallery's first screen on a 10,000-thumbnail folder, in headless Chromium.

    python benchmarks/bench_gallery.py                  # ~8 min on 2 (busy) cores
    python benchmarks/bench_gallery.py --files 2000 --repeats 3      # quick look
    flags: --files N (10000)  --repeats R (5; 0 skips the first screen)  --scroll-repeats S (1)
           --wheel-speed PX_PER_S (5000)  --old-ref REF  --json

Setup: N real JPEG thumbnails (256x192, ~2-3 KB, distinct colours, spread mtimes) in ONE folder, the worst case
for a page; a state dir; the gallery served in this process (``agent.gallery.server.Gallery``, standalone, no
agent: the status bar says so) on 127.0.0.1.

Anchor, measured in the same run and served from the same folder: Python's own ``http.server`` directory
listing of that folder (one HTML page of N links, no images): the cheapest page that "shows" the folder.
Also shown for scale, not as the verdict: a naive static page of N ``<img>`` tags (no lazy loading), served by
the same ``http.server``, measured in the first round only (it takes about a minute).

Each run (alternating gallery / listing, R times) opens a fresh tab with the HTTP cache disabled
(DevTools ``Network.setCacheDisabled``) and measures, from the navigation start:

* first contentful paint (``performance.getEntriesByType('paint')``);
* first screen: every image inside the viewport decoded (for the listing: its FCP, it has no images);
* bytes transferred by then (navigation + resource entries' ``transferSize``; the SSE stream counts its headers).

Then a scroll from the top until the last of the N tiles is on screen, at two speeds: "wheel" (--wheel-speed
px/s of wall-clock time, 5000 by default: a fast mouse wheel) and "extreme" (one viewport per animation frame,
a flick no hand makes). Measured: the time to the last tile and the gaps between frames (p50, p95, max: jank).

Old grid against new, in the same run: the gallery's static files (index.html, app.js, app.css) of --old-ref
(default: the last commit whose grid kept every loaded tile in the page) are read with ``git show`` and served
by the same server in turn with the current ones; the first screen and both scrolls are measured for each, and
printed as ratios new / old. Without git (or with --old-ref '') only the current grid is measured.

Printed: medians per page and the verdict ratios gallery / listing for FCP and bytes; plus the gallery index's
cold scan of the folder (stat + EXIF of every file) and a warm /api/list page, timed in-process.
Needs Debian's chromium + chromium-driver and selenium (``bash .ci/install-gallery-deps.sh``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FIRST_SCREEN_JS = """
const done = arguments[arguments.length - 1];
const needImages = arguments[0];
const started = performance.now();
function check() {
  const imgs = [...document.images].filter((i) => {
    const r = i.getBoundingClientRect();
    return r.bottom > 0 && r.top < innerHeight && r.width > 0;
  });
  const ready = document.readyState !== "loading" && (needImages ? imgs.length > 0 : true) &&
    imgs.every((i) => i.complete && i.naturalWidth > 0);
  const paint = performance.getEntriesByType("paint").find((p) => p.name === "first-contentful-paint");
  if (ready && paint) {
    const nav = performance.getEntriesByType("navigation")[0];
    const res = performance.getEntriesByType("resource");
    done({
      fcp: paint.startTime,
      screen: performance.now(),
      bytes: (nav ? nav.transferSize : 0) + res.reduce((a, r) => a + (r.transferSize || 0), 0),
      requests: 1 + res.length,
      images: imgs.length,
    });
  } else if (performance.now() - started > 60000) {
    done(null);
  } else {
    setTimeout(check, 10);
  }
}
check();
"""


SCROLL_JS = """
const done = arguments[arguments.length - 1];
const [mode, speed, lastPath] = arguments;
const gaps = [];
const start = performance.now();
let last = start;
function lastShown() {
  const t = document.querySelector(`#grid .tile[data-path="${lastPath}"]`);
  if (!t) return false;
  const r = t.getBoundingClientRect();
  return r.top < innerHeight && r.bottom > 0;
}
function step() {
  const now = performance.now();
  gaps.push(now - last);
  // extreme: one viewport per animation frame (a flick no hand makes); wheel: SPEED px/s of wall-clock time, as a
  // fast mouse wheel moves the page whatever the frame rate (a page that cannot keep up shows blanks or stalls).
  window.scrollBy(0, mode === "extreme" ? innerHeight : speed * (now - last) / 1000);
  last = now;
  // The page's own state (a global binding of app.js): the DOM is queried only at the bottom.
  const bottom = view.next === null && innerHeight + scrollY >= document.documentElement.scrollHeight - 2;
  if (bottom && lastShown()) {
    const sorted = gaps.slice(1).sort((a, b) => a - b);
    const q = (f) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * f))];
    done({ms: now - start, frames: gaps.length, p50_gap: q(0.5), p95_gap: q(0.95), max_gap: sorted[sorted.length - 1],
          nodes: document.getElementsByTagName("*").length, tiles: document.querySelectorAll("#grid .tile").length});
  } else if (now - start > 300000) {
    done(null);
  } else {
    requestAnimationFrame(step);
  }
}
requestAnimationFrame(step);
"""


# The last commit whose gallery grid kept every loaded tile in the page (before the windowed grid).
OLD_GRID_REF = "21881ce"
STATIC_NAMES = ("index.html", "app.js", "app.css")


def old_static(ref: str) -> dict[str, bytes] | None:
    """The old grid's static files from git, or None when there is no git checkout to read them from."""
    files: dict[str, bytes] = {}
    for name in STATIC_NAMES:
        result = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{ref}:agent/gallery/static/{name}"], capture_output=True, check=False
        )
        if result.returncode != 0:
            print(f"no old grid to compare with: {result.stderr.decode().strip()}", file=sys.stderr)
            return None
        files[name] = result.stdout
    return files


def make_folder(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    now = time.time()
    for i in range(n):
        path = folder / f"img{i:05d}.jpg"
        Image.new("RGB", (256, 192), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)).save(path, "JPEG", quality=80)
        os.utime(path, (now - i * 60, now - i * 60))


def naive_page(folder: Path, n: int) -> None:
    tags = "".join(f'<img src="thumbs/img{i:05d}.jpg" width="180" height="135">' for i in range(n))
    (folder / "naive.html").write_text(f"<!doctype html><meta charset=utf-8><title>naive</title><body>{tags}</body>")


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def browser() -> Any:
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="bench-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(90)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    # The resource timing buffer holds 250 entries by default: too few to count the naive page's bytes.
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": "performance.setResourceTimingBufferSize(1000000)"}
    )
    return driver, profile


def measure(driver: Any, url: str, has_images: bool) -> dict[str, Any]:
    driver.get("about:blank")
    driver.get(url)
    result = driver.execute_async_script(FIRST_SCREEN_JS, has_images)
    if result is None:
        raise RuntimeError(f"{url}: the first screen did not finish within 60 s")
    if not has_images:
        result["screen"] = result["fcp"]
    return dict(result)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--scroll-repeats", type=int, default=1, help="scroll runs per grid and speed (1)")
    parser.add_argument("--wheel-speed", type=float, default=5000, help="px/s of the 'wheel' scroll (5000)")
    parser.add_argument("--old-ref", default=OLD_GRID_REF, help="git commit of the old grid ('' to skip it)")
    args = parser.parse_args()

    from agent.config.loader import parse_config
    from agent.gallery.security import TOKEN_FILE
    from agent.gallery.server import Gallery

    tmp = Path(tempfile.mkdtemp(prefix="bench-gallery-"))
    servers: list[ThreadingHTTPServer] = []
    gallery = None
    driver = None
    profile = ""
    try:
        started = time.monotonic()
        make_folder(tmp / "thumbs", args.files)
        naive_page(tmp, args.files)
        print(f"made {args.files} thumbnails in {time.monotonic() - started:.1f} s", file=sys.stderr)
        (tmp / "state").mkdir(mode=0o700)
        (tmp / "inbox").mkdir()
        cfg = parse_config(
            {
                "watch": {"folders": [str(tmp / "inbox")]},
                "local": {"thumbnails_dir": str(tmp / "thumbs"), "state_dir": str(tmp / "state")},
                "gallery": {"port": 0},
            },
            origin="bench",
        )
        # Both grids from one server, in turn: the page's static files come from the grid being measured.
        from agent.gallery import handler as gallery_server

        new_static = gallery_server._static
        static_sources: dict[str, Any] = {"new": new_static}
        old = old_static(args.old_ref) if args.old_ref else None
        if old is not None:
            static_sources["old"] = old.__getitem__
        serving = {"grid": "new"}
        gallery_server._static = lambda name: static_sources[serving["grid"]](name)  # type: ignore[assignment]
        gallery = Gallery(cfg, tmp / "state", standalone=True)
        t0 = time.monotonic()
        gallery.index.items()
        cold_scan = time.monotonic() - t0
        t0 = time.monotonic()
        gallery.index.listing("", "", 0, 120)
        warm_list = time.monotonic() - t0
        gallery.start()
        token = (tmp / "state" / TOKEN_FILE).read_text().strip()

        anchor = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(tmp)))
        servers.append(anchor)
        threading.Thread(target=anchor.serve_forever, name="bench-anchor", daemon=True).start()
        aport = anchor.server_address[1]

        driver, profile = browser()
        driver.get(f"http://127.0.0.1:{gallery.port}/?token={token}")  # the cookie, once
        pages = {
            "gallery": (f"http://127.0.0.1:{gallery.port}/", True),
            "listing": (f"http://127.0.0.1:{aport}/thumbs/", False),
            "naive": (f"http://127.0.0.1:{aport}/naive.html", True),
        }
        if "old" in static_sources:  # the old grid's first screen, from the same server
            pages["gallery_old"] = pages["gallery"]
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in pages}
        for r in range(args.repeats):
            for name, (url, images) in pages.items():
                if name == "naive" and r > 0:
                    continue  # about a minute per run for 10,000 images: once shows the scale
                serving["grid"] = "old" if name == "gallery_old" else "new"
                m = measure(driver, url, images)
                if m["fcp"] is None:
                    raise RuntimeError(f"{name}: no first-contentful-paint entry: {m}")
                runs[name].append(m)
                print(
                    f"run {r + 1} {name:<11} FCP {m['fcp']:7.1f} ms  first screen {m['screen']:7.1f} ms  "
                    f"{m['bytes'] / 1024:9.1f} KiB in {m['requests']} requests ({m['images']} images on screen)",
                    file=sys.stderr,
                )

        # Scrolling from the top to the last of the N tiles, in each grid, at both speeds (new and old alternating).
        scroll: dict[str, dict[str, Any]] = {}
        last_path = f"img{args.files - 1:05d}.jpg"  # the oldest: the last tile
        for grid in ["new", "old"] * args.scroll_repeats:
            if grid not in static_sources:
                continue
            serving["grid"] = grid
            for mode in ("wheel", "extreme"):
                driver.get("about:blank")
                driver.get(pages["gallery"][0])
                driver.execute_async_script(FIRST_SCREEN_JS, True)
                m = driver.execute_async_script(SCROLL_JS, mode, args.wheel_speed, last_path)
                if m is None:
                    raise RuntimeError(f"{grid} grid, {mode}: scrolling to the last thumbnail took more than 300 s")
                scroll.setdefault(f"{grid}_{mode}", {})
                for k, v in m.items():
                    scroll[f"{grid}_{mode}"].setdefault(k, []).append(float(v))
                print(
                    f"scroll   {grid} grid {mode:<7} to the last of {args.files} in {m['ms'] / 1000:6.1f} s over "
                    f"{m['frames']} frames; frame gap p50 {m['p50_gap']:.1f} ms, p95 {m['p95_gap']:.1f} ms, "
                    f"max {m['max_gap']:.1f} ms; {m['tiles']} tiles, {m['nodes']} DOM nodes at the end",
                    file=sys.stderr,
                )
        serving["grid"] = "new"

        def med(name: str, key: str) -> float:
            return float(statistics.median(float(x[key]) for x in runs[name]))

        summary = {
            "files": args.files,
            "repeats": args.repeats,
            "index_cold_scan_s": round(cold_scan, 3),
            "api_list_warm_s": round(warm_list, 4),
        }
        if args.repeats > 0:
            summary.update(
                {
                    f"{name}_{key}": round(med(name, key), 1)
                    for name in pages
                    for key in ("fcp", "screen", "bytes", "requests", "images")
                }
            )
        for run, values in scroll.items():
            summary.update({f"scroll_{run}_{k}": round(statistics.median(v), 1) for k, v in values.items()})
        for mode in ("wheel", "extreme"):
            if f"old_{mode}" in scroll and f"new_{mode}" in scroll:
                for k in ("ms", "p50_gap", "p95_gap"):
                    new, old = (statistics.median(scroll[f"{g}_{mode}"][k]) for g in ("new", "old"))
                    summary[f"ratio_scroll_{mode}_{k}_new_over_old"] = round(new / old, 3)
        if args.repeats > 0:
            summary["ratio_fcp_gallery_over_listing"] = round(med("gallery", "fcp") / med("listing", "fcp"), 3)
            summary["ratio_bytes_gallery_over_listing"] = round(med("gallery", "bytes") / med("listing", "bytes"), 3)
            summary["ratio_screen_gallery_over_naive"] = round(med("gallery", "screen") / med("naive", "screen"), 3)
            summary["ratio_bytes_gallery_over_naive"] = round(med("gallery", "bytes") / med("naive", "bytes"), 3)
            if "gallery_old" in runs:
                for key in ("fcp", "screen", "bytes"):
                    summary[f"ratio_{key}_gallery_new_over_old"] = round(med("gallery", key) / med("gallery_old", key), 3)
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            for k, v in summary.items():
                print(f"{k:<36} {v}")
        return 0
    finally:
        if driver is not None:
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)
        for s in servers:
            s.shutdown()
            s.server_close()
        if gallery is not None:
            gallery.stop()
            gallery.join(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
