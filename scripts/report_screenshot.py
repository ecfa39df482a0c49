"""A PNG of a report.html as Debian's chromium renders it (docs/ keeps the default run's).

python scripts/report_screenshot.py <eval folder>/report.html docs/default-run-report.png
"""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

WIDTH = 1000  # CSS pixels of the page
SCALE = 0.6  # the saved picture, relative to the page


def screenshot(report: Path, out: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": WIDTH, "height": 900})
        page.goto(report.resolve().as_uri(), wait_until="load")
        picture = Image.open(io.BytesIO(page.screenshot(full_page=True)))
        browser.close()
    size = (int(picture.width * SCALE), int(picture.height * SCALE))
    picture.convert("RGB").resize(size, Image.LANCZOS).save(out, optimize=True)


if __name__ == "__main__":
    screenshot(Path(sys.argv[1]), Path(sys.argv[2]))
