"""The gallery in a real browser (headless Chromium) against a real agent on moto's server.

What a person does: open it with 'thumbdrop open', see the thumbnails, search, watch a new one arrive without
a reload, open the large view, pause the agent from the page, retry a failed item; and what an attacker
tries from a browser: no token, another site's form, a rebinding host name, a path out of the folders.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.e2e.browser import ARTIFACTS, REBIND_HOST, screenshot
from tests.e2e.conftest import REPO, E2EEnv, make_image
from tests.support import wait_for as _wait_for

GALLERY = {"gallery": {"enabled": True, "port": 0}}
COLORS = [(200, 40, 40), (40, 160, 40), (40, 40, 200), (200, 160, 40), (120, 40, 160)]


def open_url(e2e: E2EEnv) -> str:
    """The entry URL exactly as 'thumbdrop open' hands it to the default browser ($BROWSER)."""
    seen = e2e.root / "browser-was-given.txt"
    script = e2e.root / "fake-browser.sh"
    script.write_text(f'#!/bin/sh\nprintf "%s" "$1" > "{seen}"\n')
    script.chmod(0o755)
    saved = dict(e2e.env)
    e2e.env["BROWSER"] = str(script)
    try:
        wait_for(lambda: (e2e.state / "gallery.json").exists(), 60, "the gallery to start")
        result = e2e.cli("open")
    finally:
        e2e.env.clear()
        e2e.env.update(saved)
    assert result.rc == 0, result
    url = seen.read_text()
    assert url.startswith("http://127.0.0.1:") and "?token=" in url, url
    return url


def wait_for(predicate: Any, timeout: float = 45.0, what: str = "condition", diagnose: Any = None) -> Any:
    """tests.support.wait_for, where an element the page re-rendered between finding and reading it (the grid
    recycles its cells) counts as "not yet" instead of failing the test."""
    from selenium.common.exceptions import StaleElementReferenceException

    def settled() -> Any:
        try:
            return predicate()
        except StaleElementReferenceException:
            return None

    return _wait_for(settled, timeout, what, diagnose)


def paths(driver: Any, selector: str) -> list[str]:
    """The data-path of every element matching ``selector``, read in one step (no stale elements)."""
    script = "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.getAttribute('data-path'))"
    return [str(p) for p in driver.execute_script(script, selector)]


def tiles(driver: Any) -> list[str]:
    return paths(driver, "#grid .tile")


def agent_state(e2e: E2EEnv) -> str:
    result = e2e.cli("status", "--json")
    assert result.rc == 0, result
    return str(json.loads(result.stdout)["agent"]["state"])


def click(driver: Any, selector: str) -> None:
    driver.find_element("css selector", selector).click()


def test_the_gallery_shows_the_thumbnails_live_and_drives_the_agent(e2e: E2EEnv, browser: Any) -> None:
    names = ["a0.jpg", "a1.jpg", "a2.jpg", "a3.jpg", "trip/beach.jpg"]
    for name, color in zip(names, COLORS, strict=True):
        make_image(e2e.inbox / name, (640, 480), color=color)
    e2e.write_config(GALLERY)
    agent = e2e.start_agent()
    agent.wait_ready()
    wait_for(lambda: all((e2e.thumbs / n).is_file() for n in names), 90, "the thumbnails", agent.diagnose)
    # A video's poster and its preview, as the worker makes them for clip.mov.
    make_image(e2e.thumbs / "clip.mov.jpg", (256, 144), color=(90, 90, 90))
    (e2e.thumbs / "clip.mov.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom")
    url = open_url(e2e)
    base = url.split("?", 1)[0]
    token = url.split("token=", 1)[1]
    assert stat.S_IMODE((e2e.state / "gallery.token").stat().st_mode) == 0o600

    # Without the token: refused.
    browser.get(base)
    assert "private" in browser.find_element("tag name", "body").text
    assert not tiles(browser)
    # With it: in, and the token is gone from the address bar.
    browser.get(url)
    wait_for(lambda: len(tiles(browser)) == 5, 60, "5 thumbnails in the top folder", agent.diagnose)
    assert token not in browser.current_url and token not in browser.page_source
    assert sorted(tiles(browser)) == ["a0.jpg", "a1.jpg", "a2.jpg", "a3.jpg", "clip.mov.jpg"]
    assert paths(browser, ".folder") == ["trip"]
    assert browser.find_elements("css selector", "#grid h2.group")  # grouped by capture date
    wait_for(lambda: browser.find_element("id", "state").text.lower() in ("idle", "working"), 60, "a live status")
    wait_for(lambda: "events: 0 waiting" in browser.find_element("id", "queues").text, 60, "the queue depths")
    browser.execute_script("window.__sameDocument = true")  # gone if the page were reloaded
    screenshot(browser, "grid")

    # Search by name, then a folder and its breadcrumbs.
    search = browser.find_element("id", "search")
    search.send_keys("a2")
    wait_for(lambda: tiles(browser) == ["a2.jpg"], 30, "the search to filter")
    search.clear()
    search.send_keys("beach")
    wait_for(lambda: tiles(browser) == ["trip/beach.jpg"], 30, "the search to look in subfolders")
    search.clear()
    search.send_keys(" ")  # an input event with an empty query
    wait_for(lambda: len(tiles(browser)) == 5, 30, "the search to clear")
    click(browser, '.folder[data-path="trip"]')
    wait_for(lambda: tiles(browser) == ["trip/beach.jpg"], 30, "the folder to open")
    assert [c.text for c in browser.find_elements("css selector", "#crumbs a")] == ["All", "trip"]
    click(browser, '#crumbs a[data-path=""]')
    wait_for(lambda: len(tiles(browser)) == 5, 30, "back to the top folder")

    # A thumbnail pulled during the test appears without a reload.
    make_image(e2e.inbox / "fresh.jpg", (640, 480), color=(10, 200, 200))
    pulled_at = wait_for(
        lambda: (e2e.thumbs / "fresh.jpg").is_file() and time.monotonic(), 90, "the new thumbnail", agent.diagnose
    )
    wait_for(lambda: "fresh.jpg" in tiles(browser), 60, "the new thumbnail in the page", agent.diagnose)
    shown_after = time.monotonic() - pulled_at
    assert browser.execute_script("return window.__sameDocument === true"), "the page was reloaded"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "new-thumbnail-latency.txt").write_text(f"{shown_after:.3f} s from the file in the folder to the tile\n")

    # The large view: the original, still in the watch folder.
    click(browser, '.tile[data-path="a1.jpg"]')
    wait_for(lambda: browser.find_element("id", "viewer").is_displayed(), 30, "the large view")
    img = browser.find_element("id", "viewer-img")
    wait_for(lambda: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img), 30, "the image")
    assert browser.execute_script("return arguments[0].naturalWidth", img) == 640  # the original, not the 256 px thumbnail
    assert "/file/w/0/a1.jpg" in str(img.get_attribute("src"))
    screenshot(browser, "large-view")
    click(browser, "#viewer-close")
    wait_for(lambda: not browser.find_element("id", "viewer").is_displayed(), 30, "the large view to close")
    # A video poster opens its preview (keyboard this time).
    browser.find_element("css selector", '.tile[data-path="clip.mov.jpg"]').send_keys("\n")
    video = browser.find_element("id", "viewer-video")
    wait_for(lambda: video.is_displayed(), 30, "the video preview")
    assert str(video.get_attribute("src")).endswith("/file/t/clip.mov.mp4")
    assert str(video.get_attribute("poster")).endswith("/file/t/clip.mov.jpg")
    assert not browser.find_element("id", "viewer-img").is_displayed()
    browser.find_element("tag name", "body").send_keys("\ue00c")  # Escape
    wait_for(lambda: not browser.find_element("id", "viewer").is_displayed(), 30, "Escape to close the large view")

    # Pause from the page: the agent pauses, and 'thumbdrop status' agrees; then resume.
    click(browser, "#pause")
    wait_for(lambda: browser.find_element("id", "state").text.lower() == "paused", 30, "the page to show paused")
    assert agent_state(e2e) == "paused"
    screenshot(browser, "statusbar", browser.find_element("id", "statusbar"))
    assert browser.find_element("id", "pause").text == "Resume"
    click(browser, "#pause")
    wait_for(lambda: browser.find_element("id", "state").text.lower() != "paused", 30, "the page to show resumed")
    assert agent_state(e2e) == "running"
    assert browser.execute_script("return window.__sameDocument === true")


def test_a_failed_item_shows_its_reason_and_retry_brings_it(e2e: E2EEnv, browser: Any) -> None:
    e2e.thumbs.mkdir()
    (e2e.thumbs / "blocked").write_text("a file where the puller needs a folder")
    make_image(e2e.inbox / "blocked" / "pic.jpg", (320, 240))
    make_image(e2e.inbox / "fine.jpg", (320, 240))
    e2e.write_config(GALLERY)
    agent = e2e.start_agent()
    agent.wait_ready()
    browser.get(open_url(e2e))
    wait_for(lambda: "fine.jpg" in tiles(browser), 90, "the good thumbnail", agent.diagnose)
    click(browser, "#failed-toggle")
    row = '#failed-list li[data-role="puller"]'
    wait_for(lambda: browser.find_elements("css selector", row), 90, "the failure in the page", agent.diagnose)
    assert "blocked/pic.jpg" in str(browser.find_element("css selector", row).get_attribute("data-name"))
    assert "in the way" in browser.find_element("css selector", f"{row} .reason").text
    screenshot(browser, "failed-items", browser.find_element("id", "failed"))

    (e2e.thumbs / "blocked").unlink()  # the user fixes the cause, then retries
    click(browser, f"{row} .retry")
    wait_for(lambda: (e2e.thumbs / "blocked" / "pic.jpg").is_file(), 60, "the retried pull", agent.diagnose)
    wait_for(lambda: not browser.find_elements("css selector", row), 30, "the failure to leave the list")
    wait_for(lambda: browser.find_elements("css selector", '.folder[data-path="blocked"]'), 30, "its folder in the page")


class _Attacker(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


def test_thumbdrop_gallery_serves_the_folders_without_an_agent(e2e: E2EEnv, browser: Any) -> None:
    make_image(e2e.thumbs / "trip" / "old.jpg", (256, 192))
    log = e2e.root / "gallery.log"
    argv = [sys.executable, "-m", "agent", "--config", str(e2e.config_path), "gallery", "--port", "0"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=e2e.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: b"gallery at http://127.0.0.1:" in log.read_bytes() or proc.poll() is not None, 60, "the gallery")
        assert proc.poll() is None, log.read_text()
        second = e2e.cli("gallery", "--port", "0")
        assert second.rc == 2 and "already serving" in second.stderr, second
        printed = e2e.cli("open", "--print")
        assert printed.rc == 0, printed
        browser.get(printed.stdout.strip())
        wait_for(lambda: browser.find_elements("css selector", '.folder[data-path="trip"]'), 60, "the folder in the page")
        wait_for(lambda: "No agent" in browser.find_element("id", "line").text, 60, "the page to say there is no agent")
        assert browser.find_element("id", "state").text.lower() == "offline"
        assert not browser.find_element("id", "pause").is_enabled()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert not (e2e.state / "gallery.json").exists()
    gone = e2e.cli("open", "--print")
    assert gone.rc == 3 and "gallery.enabled" in gone.stderr.replace("gallery: {enabled", "gallery.enabled"), gone


def test_attacks_from_a_browser_are_refused(e2e: E2EEnv, browser: Any) -> None:
    make_image(e2e.inbox / "a.jpg", (320, 240))
    e2e.write_config(GALLERY)
    agent = e2e.start_agent()
    agent.wait_ready()
    wait_for(lambda: (e2e.thumbs / "a.jpg").is_file(), 90, "the thumbnail", agent.diagnose)
    url = open_url(e2e)
    port = int(url.split(":")[2].split("/")[0])
    token = url.split("token=", 1)[1]
    (e2e.root / "secret.jpg").write_bytes((e2e.thumbs / "a.jpg").read_bytes())

    # DNS rebinding: a name of the attacker's resolving to 127.0.0.1 gets nothing, not even with the token.
    browser.get(f"http://{REBIND_HOST}:{port}/?token={token}")
    assert "wrong Host" in browser.find_element("tag name", "body").text

    browser.get(url)
    wait_for(lambda: "a.jpg" in tiles(browser), 60, "the thumbnail in the page")

    def fetch(path: str, method: str = "GET", headers: dict[str, str] | None = None) -> int:
        return int(
            browser.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "fetch(arguments[0], {method: arguments[1], headers: arguments[2], credentials: 'same-origin'})"
                ".then(r => done(r.status), e => done(-1));",
                path,
                method,
                headers or {},
            )
        )

    # Path traversal, from the page and raw (a browser normalises '..' itself before sending).
    assert fetch("/file/t/a.jpg") == 200
    for path in ("/file/t/%2e%2e/secret.jpg", "/file/t/..%2fsecret.jpg", "/file/w/0/..%2f..%2fsecret.jpg"):
        assert fetch(path) == 404, path
    cookie = next(c for c in browser.get_cookies() if c["name"].startswith("thumbdrop_session"))
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert browser.execute_script("return document.cookie") == ""  # HttpOnly: no script reads it
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("GET", "/file/t/../secret.jpg", skip_host=True)
    conn.putheader("Host", f"127.0.0.1:{port}")
    conn.putheader("Cookie", f"{cookie['name']}={cookie['value']}")
    conn.endheaders()
    assert conn.getresponse().status == 404
    conn.close()
    # Wrong Host with a valid session.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/api/status", headers={"Host": "attacker.example", "Cookie": f"{cookie['name']}={cookie['value']}"})
    assert conn.getresponse().status == 421
    conn.close()

    # CSRF: a POST from the page without the token, and another site's form, both refused; the agent runs on.
    assert fetch("/api/pause", "POST", {"Content-Type": "application/json"}) == 403
    site = e2e.root / "attacker"
    site.mkdir()
    (site / "index.html").write_text(
        f'<form id="f" method="POST" action="http://127.0.0.1:{port}/api/pause"></form>'
        '<script>document.getElementById("f").submit()</script>'
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Attacker, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, name="attacker-site", daemon=True)
    thread.start()
    try:
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/index.html")
        wait_for(lambda: f":{port}/api/pause" in browser.current_url, 30, "the forged form to be sent")
        assert "CSRF" in browser.find_element("tag name", "body").text
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert agent_state(e2e) == "running"


@contextmanager
def standalone_gallery(e2e: E2EEnv) -> Iterator[str]:
    """'thumbdrop gallery' serving the local folders (no agent); yields the entry URL 'thumbdrop open' prints."""
    log = e2e.root / "gallery.log"
    argv = [sys.executable, "-m", "agent", "--config", str(e2e.config_path), "gallery", "--port", "0"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=e2e.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: b"gallery at http://127.0.0.1:" in log.read_bytes() or proc.poll() is not None, 60, "the gallery")
        assert proc.poll() is None, log.read_text()
        printed = e2e.cli("open", "--print")
        assert printed.rc == 0, printed
        yield printed.stdout.strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


GRID_STATS_JS = """
const grid = document.getElementById("grid");
const top = document.getElementById("statusbar").getBoundingClientRect().bottom;
const visible = [...grid.querySelectorAll(".tile")].map((t) => [t.dataset.path, t.getBoundingClientRect()])
  .filter(([, r]) => r.bottom > top && r.top < innerHeight).sort((a, b) => a[1].top - b[1].top || a[1].left - b[1].left);
return {tiles: grid.querySelectorAll(".tile").length, nodes: grid.getElementsByTagName("*").length,
        visible: visible.map(([p]) => p), tops: Object.fromEntries(visible.map(([p, r]) => [p, r.top])),
        lazy: [...grid.querySelectorAll("img")].every((i) => i.loading === "lazy" && i.decoding === "async"),
        headers: [...grid.querySelectorAll("h2.group")].map((h) => h.dataset.date)};
"""


def test_the_grid_keeps_a_bounded_window_of_10000_thumbnails(e2e: E2EEnv, browser: Any) -> None:
    n = 10_000
    data = make_image(e2e.root / "one.jpg", (256, 192)).read_bytes()
    e2e.thumbs.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for i in range(n):  # newest first: img00000 is the first tile and img09999 (a week older) the last
        path = e2e.thumbs / f"img{i:05d}.jpg"
        path.write_bytes(data)
        os.utime(path, (now - i * 60, now - i * 60))
    first, last = "img00000.jpg", f"img{n - 1:05d}.jpg"

    def stats() -> dict[str, Any]:
        return dict(browser.execute_script(GRID_STATS_JS))

    with standalone_gallery(e2e) as url:
        browser.get(url)
        wait_for(lambda: browser.find_element("tag name", "body").get_attribute("data-total") == str(n), 90, "the listing")
        wait_for(lambda: first in stats()["visible"], 60, "the first thumbnail")
        top = stats()
        assert 0 < top["tiles"] < 500 and top["lazy"], top["tiles"]
        assert top["headers"], "no capture-date header"

        # To the end (the End key of a person in a hurry): the last thumbnail is reachable and shown.
        def at_the_end() -> bool:
            browser.execute_script("window.scrollTo(0, document.documentElement.scrollHeight)")
            return last in stats()["visible"]

        wait_for(at_the_end, 120, "the last thumbnail on screen")
        end = stats()
        assert 0 < end["tiles"] < 500 and end["nodes"] < 1500 and end["lazy"], (end["tiles"], end["nodes"])
        assert first not in end["visible"]
        # It works like any other: a click opens it; the keyboard moves from it, through recycled cells.
        click(browser, f'.tile[data-path="{last}"]')
        wait_for(lambda: browser.find_element("id", "viewer").is_displayed(), 30, "the large view of the last one")
        assert browser.find_element("id", "viewer-caption").text == last
        browser.find_element("tag name", "body").send_keys("\ue00c")  # Escape
        wait_for(lambda: not browser.find_element("id", "viewer").is_displayed(), 30, "the large view to close")
        browser.find_element("css selector", f'.tile[data-path="{last}"]').send_keys("\ue012")  # ArrowLeft
        focused = "return document.activeElement.dataset.path"
        assert browser.execute_script(focused) == f"img{n - 2:05d}.jpg"
        browser.switch_to.active_element.send_keys("\ue011")  # Home: the first thumbnail, scrolled into view
        wait_for(lambda: browser.execute_script(focused) == first and first in stats()["visible"], 30, "Home")

        # And back to the top by scrolling: the window is bounded there too.
        browser.execute_script("window.scrollTo(0, 0)")
        wait_for(lambda: first in stats()["visible"], 30, "the first thumbnail again")
        back = stats()
        assert 0 < back["tiles"] < 500 and back["nodes"] < 1500, (back["tiles"], back["nodes"])

        # A thumbnail arriving while the user looks at the middle: what is on screen stays where it is.
        browser.execute_script("window.scrollTo(0, document.documentElement.scrollHeight / 2)")
        wait_for(lambda: len(stats()["visible"]) > 10, 30, "the middle of the grid")
        before = stats()
        watched = before["visible"][len(before["visible"]) // 2]
        browser.execute_script(
            "addNew({path: 'new.jpg', name: 'new.jpg', folder: '', taken: Date.now() / 1000 + 3600, date: '2999-01-01',"
            " thumb: '/file/t/img00000.jpg', large: '/file/t/img00000.jpg', video: null, original: false})"
        )
        after = stats()
        assert abs(after["tops"].get(watched, 1e9) - before["tops"][watched]) <= 1, (watched, before["tops"], after["tops"])
        browser.execute_script("window.scrollTo(0, 0)")
        wait_for(lambda: stats()["visible"][:1] == ["new.jpg"], 30, "the new thumbnail first")
        assert "2999-01-01" in stats()["headers"]
        assert "new" in str(browser.find_element("css selector", '.tile[data-path="new.jpg"]').get_attribute("class"))

        # Many at once (the server's "refresh" event): the list is read again, and the screen stays put.
        browser.execute_script("window.scrollTo(0, document.documentElement.scrollHeight * 0.6)")
        wait_for(lambda: len(stats()["visible"]) > 10, 30, "further down the grid")
        before = stats()
        watched = before["visible"][len(before["visible"]) // 2]
        browser.execute_async_script("refresh().then(arguments[arguments.length - 1])")
        after = stats()
        assert abs(after["tops"].get(watched, 1e9) - before["tops"][watched]) <= 1, (watched, before["tops"], after["tops"])
        assert 0 < after["tiles"] < 500
        assert not browser.execute_script("return view.paths.has('new.jpg')")  # not on the server: gone
