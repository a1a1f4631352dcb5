"""Drive Debian's Chromium headless through chromium-driver (Selenium): no browser is downloaded.

`Browser` wraps one Chromium with a screenshot per step (under the test's temp dir, listed in the
failure report), waits on conditions (never bare sleeps), and reads the Performance API for page
weight and first paint. With `UPDATE_SCREENSHOTS=1` the steps named for the README are copied to
docs/img/.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
)
ROOT = Path(__file__).resolve().parents[2]
README_IMAGES = ROOT / "docs" / "img"
PHONE = (390, 844)
DESKTOP = (1280, 900)


def versions() -> str:
    """'Chromium X / ChromeDriver Y' as installed (named in the test output and the report)."""
    out = []
    for binary in (CHROMIUM, CHROMEDRIVER):
        run = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
        out.append(run.stdout.strip())
    return " / ".join(out)


class Browser:
    """One headless Chromium window; `shot(name)` saves a numbered PNG under `shots_dir`."""

    def __init__(self, base_url: str, shots_dir: Path, *, name: str, size: tuple[int, int] = DESKTOP) -> None:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--window-size={size[0]},{size[1]}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        self.driver.set_window_size(*size)
        self.base = base_url
        self.name = name
        self.shots_dir = shots_dir
        self.shots: list[Path] = []

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def shot(self, step: str, *, readme: str | None = None) -> Path:
        """Screenshot the window as `<n>-<browser>-<step>.png`; `readme` also names a docs/img file."""
        self.shots_dir.mkdir(parents=True, exist_ok=True)
        path = self.shots_dir / f"{len(list(self.shots_dir.glob('*.png'))):02d}-{self.name}-{step}.png"
        self.driver.save_screenshot(str(path))
        self.shots.append(path)
        if readme is not None and _update_readme_images():
            README_IMAGES.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, README_IMAGES / readme)
        return path

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return str(self.find(css).text)

    def visible(self, css: str) -> bool:
        found = self.all(css)
        return bool(found) and found[0].is_displayed()

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = 15) -> Any:
        """Wait until `condition()` is truthy; fail naming `what` (and save a screenshot)."""

        def check(_: object) -> Any:
            try:
                return condition()
            except WebDriverException:
                return False

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(check)
        except TimeoutException:
            self.shot("timeout")
            raise AssertionError(f"{self.name}: timed out after {timeout} s waiting for {what}") from None

    def wait_visible(self, css: str, timeout: float = 15) -> WebElement:
        self.wait(lambda: self.visible(css), f"{css} to show", timeout)
        return self.find(css)

    def fill(self, css: str, value: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(value)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def console_errors(self) -> list[str]:
        """Severe browser-console entries (a CSP violation or a script error shows up here)."""
        return [e["message"] for e in self.driver.get_log("browser") if e.get("level") == "SEVERE"]

    def page_weight(self) -> dict[str, float]:
        """First-load transfer of the document and its subresources (bytes) and first contentful paint (ms)."""
        return dict(
            self.js(
                """
                const nav = performance.getEntriesByType('navigation')[0];
                const res = performance.getEntriesByType('resource');
                const paint = performance.getEntriesByName('first-contentful-paint')[0];
                return {
                  documentBytes: nav.transferSize,
                  assetBytes: res.reduce((n, r) => n + r.transferSize, 0),
                  assets: res.length,
                  firstContentfulPaintMs: paint ? paint.startTime : -1,
                  domContentLoadedMs: nav.domContentLoadedEventEnd,
                };
                """
            )
        )

    def close(self) -> None:
        self.driver.quit()


def _update_readme_images() -> bool:
    import os

    return os.environ.get("UPDATE_SCREENSHOTS") == "1"
