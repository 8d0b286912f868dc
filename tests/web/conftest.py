"""A real headless Chromium (Debian's chromium + chromium-driver) driven by Selenium."""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and shutil.which("chromedriver") or
            os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--window-size=1300,1000",
                "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    # Chromium's own files (profile, sockets) go into a directory removed at the end
    home = tempfile.mkdtemp(prefix="dispy-chromium-")
    opts.add_argument(f"--user-data-dir={home}/profile")
    service = Service(CHROMEDRIVER, env={**os.environ, "TMPDIR": home})
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """The browser, with no cookies from an earlier test."""
    browser.delete_all_cookies()
    yield browser
    browser.get("about:blank")


def wait_until(what: str, fn: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll ``fn`` until it returns something true (browser state settles on its own)."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (StaleElementReferenceException, WebDriverException) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def png_pixels_vary(png: bytes) -> bool:
    """True when a PNG is not one flat colour (no PIL needed): in the decompressed,
    filtered scanlines a flat image is almost all zeros (each pixel equals its
    neighbours), a page with text, tables and charts is not."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, data = 8, b""
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        if kind == b"IDAT":
            data += png[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(data)
    varied = len(raw) - raw.count(0)
    return varied > len(raw) // 200 and len(set(raw[::97])) > 16


def screenshot(driver: Any, path: Path) -> bytes:
    """Save a screenshot (of the top of the page) and check that it shows something."""
    driver.execute_script("window.scrollTo(0, 0)")
    png = driver.get_screenshot_as_png()
    path.write_bytes(png)
    assert len(png) > 5000, f"{path}: screenshot of {len(png)} bytes is blank"
    assert png_pixels_vary(png), f"{path}: screenshot is one flat colour"
    return png


def fresh(read: Callable[[], Any], tries: int = 50) -> Any:
    """``read()`` again when the live page redrew its table under it (a stale element):
    the pages re-render on every server-sent update, so a read may straddle one."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(tries - 1):
        try:
            return read()
        except StaleElementReferenceException:
            time.sleep(0.02)
    return read()


def texts(driver: Any, css: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return fresh(lambda: [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)])


def rows(driver: Any, table: str, *cols: str) -> list[tuple[str, ...]]:
    """The texts of columns ``cols`` of each row of table ``table``, read in one script
    (the page cannot redraw between two of them, as it can between two ``texts``)."""
    return [tuple(row) for row in driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(tr =>"
        " arguments[1].map(c => (tr.querySelector(`td[data-col=${c}]`) || {}).innerText"
        " ?? null))", f"#{table} tbody tr", list(cols))]


def cell(driver: Any, table: str, key: str, col: str) -> str:
    """Text of column ``col`` in the row ``key`` of table ``table``."""
    from selenium.webdriver.common.by import By

    css = f"#{table} tbody tr[data-key='{key}'] td[data-col={col}]"
    return fresh(lambda: driver.find_element(By.CSS_SELECTOR, css).text)


def click(driver: Any, css: str, within: str | None = None) -> None:
    """Click the element (found afresh: live pages redraw their tables)."""
    from selenium.webdriver.common.by import By

    def attempt() -> bool:
        driver.find_element(By.CSS_SELECTOR, css).click()
        return True

    wait_until(f"click on {css}", attempt, timeout=10)


def fill(driver: Any, css: str, text: str) -> None:
    """Type ``text`` into a fresh input."""
    from selenium.webdriver.common.by import By

    def attempt() -> bool:
        box = driver.find_element(By.CSS_SELECTOR, css)
        box.clear()
        box.send_keys(text)
        return True

    wait_until(f"typing into {css}", attempt, timeout=10)
