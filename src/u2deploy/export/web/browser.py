"""Headless Chromium through Playwright's Python API, for the tests, ``tools/web_speed.py`` and the
``browser`` runner: the one place that knows how to start it here.

Playwright drives a system Chromium by path (``playwright install`` downloads a browser, which these
machines cannot); the flags keep it from reaching the network on its own. ``U2DEPLOY_CHROMIUM``
names another binary.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import Any

from ...errors import U2Error

ARGS = ("--no-sandbox", "--headless=new", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync")
WEBGPU_ARGS = ("--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-angle=swiftshader",
               "--use-webgpu-adapter=swiftshader")
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    """The Chromium to drive: ``$U2DEPLOY_CHROMIUM``, else the first on PATH."""
    override = os.environ.get("U2DEPLOY_CHROMIUM")
    if override:
        return override if os.path.isfile(override) else None
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


def missing() -> str | None:
    """Why a headless browser cannot start here (one line), or None."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "needs Playwright's Python API (pip install -e '.[web]')"
    if chromium_path() is None:
        return "needs Chromium (apt-get install chromium, or set U2DEPLOY_CHROMIUM)"
    return None


@contextlib.contextmanager
def chromium(webgpu: bool = False) -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``); closed on exit."""
    why = missing()
    if why:
        raise U2Error(f"headless Chromium: {why}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=[*ARGS, *(WEBGPU_ARGS if webgpu else ())])
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Any, url: str, timeout_s: float = 120) -> Any:
    """A new page of ``browser`` open at ``url``; uncaught errors and console errors collect in ``page.errors``
    (but the browser's own request for a favicon the site does not have)."""
    page = browser.new_page()
    page.set_default_timeout(timeout_s * 1000)
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("console", lambda msg: page.errors.append(msg.text)
            if msg.type == "error" and not msg.location.get("url", "").endswith("/favicon.ico") else None)
    page.goto(url)
    return page


@contextlib.contextmanager
def page_at(url: str, webgpu: bool = False, timeout_s: float = 120) -> Iterator[Any]:
    """A page open at ``url`` in a browser of its own, closed on exit."""
    with chromium(webgpu) as browser:
        yield open_page(browser, url, timeout_s)
