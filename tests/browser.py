"""Headless Chromium for tests (Debian ``chromium`` + ``chromium-driver``, driven by Selenium).

Tests that use :func:`chromium` skip when Chromium, ChromeDriver or Selenium is missing; ``.ci/run``
installs them so that CI runs them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")

# No background traffic: this machine's network is closed, and Chromium otherwise retries many connections.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--window-size=1280,1600",
)


def _first(candidates: tuple[str, ...], env: str, name: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    for c in candidates:
        if os.path.exists(c):
            return c
    return shutil.which(name)


@contextmanager
def chromium() -> Iterator[object]:
    """A Selenium WebDriver on headless Chromium with a fresh profile; skips the test when unavailable."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    binary = _first(CHROMIUM_CANDIDATES, "CLIPLAB_CHROMIUM", "chromium")
    driver_path = _first(DRIVER_CANDIDATES, "CLIPLAB_CHROMEDRIVER", "chromedriver")
    if not binary or not driver_path:
        pytest.skip("headless Chromium not available (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="cliplab-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
