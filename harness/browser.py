"""Headless Chromium driven by selenium (Debian's chromedriver), for the console's pages.

Shared by the console browser tests and ``benchmarks/console_ui.py``; selenium is a dev
dependency, so import this module only where a browser is wanted.
"""

from __future__ import annotations

import shutil
import time

from selenium import webdriver
from selenium.webdriver.remote.webdriver import WebDriver


def chrome() -> WebDriver:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if browser is None or driver_bin is None:
        raise RuntimeError(
            "headless Chromium is needed: apt-get install chromium chromium-driver "
            "(`make test` installs them)"
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                "--disable-dev-shm-usage",
                # A control-room screen is visible: no throttling of a "hidden" headless page.
                "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows"):  # fmt: skip
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(driver_bin))


def wait_until(what: str, cond: object, timeout: float = 20.0, every: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()  # type: ignore[operator]
            if value:
                return value
        except Exception as exc:  # stale or missing elements while the page updates
            last_error = exc
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} ({last_error!r})")
