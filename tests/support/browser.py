"""Headless Debian Chromium driven by Playwright (no browser download: `executable_path`), for the
dashboard's browser tests and screenshots. Every console error and page error is recorded, so a test
can fail on any it did not expect."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import ConsoleMessage, Error, Page, Playwright, sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps trying to reach Google's hosts, which
# this machine's closed network refuses (and logs); --no-sandbox because CI runs as root.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000


@dataclass
class Problems:
    """What went wrong in the page: console errors (with the URL they came from) and uncaught errors."""

    console: list[tuple[str, str]] = field(default_factory=list)
    page: list[str] = field(default_factory=list)

    def all(self) -> list[str]:
        return [f"console: {text} ({url})" for text, url in self.console] + [f"page: {e}" for e in self.page]


class Browser:
    def __init__(self, playwright: Playwright, profile: Path) -> None:
        self._context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1360, "height": 900},
            permissions=["clipboard-read", "clipboard-write"],
            color_scheme="light",
            timezone_id="UTC",
            locale="en-GB",
        )
        self._context.set_default_timeout(TIMEOUT_MS)

    def page(self) -> tuple[Page, Problems]:
        page = self._context.new_page()
        problems = Problems()

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                problems.console.append((message.text, message.location.get("url", "")))

        def on_page_error(error: Error) -> None:
            problems.page.append(str(error))

        page.on("console", on_console)
        page.on("pageerror", on_page_error)
        return page, problems

    def close(self) -> None:
        self._context.close()


@contextmanager
def chromium() -> Iterator[Browser]:
    """A fresh Chromium profile (its own --user-data-dir), removed afterwards."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    try:
        with sync_playwright() as playwright:
            browser = Browser(playwright, profile)
            try:
                yield browser
            finally:
                browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
