"""Driving the web page (app.py) in headless Chromium through chromedriver: shared by tests/test_app.py and
bench/app_timing.py (which takes docs/app.png the same way)."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                  "--window-size=1280,1000")


class BrowserUnavailable(Exception):
    """No Chromium, chromedriver or selenium here; the message says which."""


def chromium(user_data_dir: str | Path | None = None):
    """A headless Chromium WebDriver with a fresh profile (a new temporary folder unless one is given)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        raise BrowserUnavailable("no chromium + chromedriver (Debian: apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise BrowserUnavailable("selenium not installed: pip install -r requirements-app.txt") from None
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in CHROMIUM_FLAGS:
        opts.add_argument(a)
    opts.add_argument(f"--user-data-dir={user_data_dir or tempfile.mkdtemp(prefix='chromium_profile_')}")
    return webdriver.Chrome(options=opts, service=Service(driver))


def wait(fn, timeout: float = 120.0, what: str = "the page"):
    """fn()'s first truthy value, polled until `timeout` seconds."""
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def open_page(drv, url: str):
    from selenium.webdriver.common.by import By
    drv.get(url)
    wait(lambda: drv.find_elements(By.ID, "enhance-btn"), 60, "the page to load")


def upload_and_press(drv, path: Path):
    """Put `path` into the Photos box through its file input, wait until it is listed, press Enhance."""
    from selenium.webdriver.common.by import By
    drv.find_element(By.CSS_SELECTOR, "#photos input[type=file]").send_keys(str(path))
    wait(lambda: drv.find_elements(By.CSS_SELECTOR, f"#photos td.filename[aria-label='{path.name}']"), 60,
         "the upload")
    drv.find_element(By.ID, "enhance-btn").click()


def status_line(drv, prefix: str, timeout: float = 300.0) -> str:
    """The first line of the status box that starts with `prefix`, once there is one."""
    from selenium.webdriver.common.by import By
    return wait(lambda: next((ln for ln in drv.find_element(By.ID, "status").text.splitlines()
                              if ln.startswith(prefix)), None), timeout, f"a status line '{prefix}...'")


def clear_uploads(drv):
    from selenium.webdriver.common.by import By
    drv.find_element(By.CSS_SELECTOR, "#photos button[aria-label='Clear']").click()
    wait(lambda: not drv.find_elements(By.CSS_SELECTOR, "#photos td.filename"), 30, "the upload list to clear")


def download_href(drv, name: str) -> str:
    """The URL of the download link for result file `name`."""
    from selenium.webdriver.common.by import By
    return wait(lambda: [a.get_attribute("href") for a in
                         drv.find_elements(By.CSS_SELECTOR, f"#downloads a[download='{name}']")], 60,
                f"the download link of {name}")[0]
