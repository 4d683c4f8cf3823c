"""Headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by Selenium, never downloading a browser.

Without them the browser tests skip, saying what is missing; under CI (``CI=true``) they fail instead, since
``.ci/install-gallery-deps.sh`` installs them there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = REPO / "artifacts" / "gallery"
REBIND_HOST = "rebind.test"  # resolved to 127.0.0.1 by the browser alone: a DNS-rebinding attacker's name


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e .[test])"
    if not any(os.access(p, os.X_OK) for p in CHROMIUM):
        return "Debian's chromium is not installed (bash .ci/install-gallery-deps.sh)"
    if not os.access(CHROMEDRIVER, os.X_OK):
        return "Debian's chromium-driver is not installed (bash .ci/install-gallery-deps.sh)"
    return None


def need_browser() -> None:
    why = _missing()
    if why is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"the gallery's browser tests cannot run in CI: {why}")
    pytest.skip(why)


@pytest.fixture()
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    need_browser()
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium-manager must never fetch a browser or a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="thumbdrop-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = next(p for p in CHROMIUM if os.access(p, os.X_OK))
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
        f"--host-resolver-rules=MAP {REBIND_HOST} 127.0.0.1",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: Any, name: str, element: Any = None) -> Path:
    """Save a PNG under artifacts/gallery/ (kept by CI)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if element is not None:
        element.screenshot(str(path))
    else:
        driver.save_screenshot(str(path))
    return path
