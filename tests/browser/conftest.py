"""Fixtures for the browser tests: one live park per module, Debian's Chromium via playwright.

Playwright never downloads a browser here: it drives ``/usr/bin/chromium`` (``make test``
installs the Debian package where it is missing). Every test gets a fresh browser context
(its own sessionStorage and localStorage) and fails if the page threw a JavaScript error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from bench.console import CHROMIUM, CHROMIUM_ARGS  # (the one place the flags are listed)
from tests.browser.live import LivePark, live_park

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")


# Module scope, not session: playwright's sync API keeps an asyncio loop running on this
# thread while it is started, and later tests that call asyncio.run (or detect the running
# loop, as sniffio does) must not see it.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                          headless=True)
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePark]:
    with live_park(tmp_path_factory.mktemp("live"), meters=12) as park:
        yield park


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    context.set_default_timeout(10_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"
