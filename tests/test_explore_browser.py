"""The explorer in a real headless Chromium (Selenium + Debian's chromium and chromium-driver) against uvicorn on a
free port: catalog, search, an item whose <video> loads with a finite duration, hostile HTML that must not run,
a user page, and screenshots that are not blank."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.explore_store import build_explore_store

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install 'seerec[dev]')"
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not binary.exists() and not shutil.which(binary.name):
            return f"{binary} is missing (apt-get install -y chromium chromium-driver)"
    return None


pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    from jobs.explore import build_app

    built = build_explore_store(tmp_path_factory.mktemp("explore-browser"))
    port = free_port()
    app = build_app(built.cfg, [built.compare_dir])
    served = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not served.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.1)
    yield built, f"http://127.0.0.1:{port}"
    served.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium"))
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER if CHROMEDRIVER.exists()
                                                  else shutil.which("chromedriver"))), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(condition, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("the page did not reach the expected state in time")


def not_blank(driver, path: Path) -> float:
    """Save a screenshot and return its pixel standard deviation (a blank page has about 0)."""
    driver.save_screenshot(str(path))
    return float(np.asarray(Image.open(path).convert("L"), dtype=np.float32).std())


def nothing_ran(driver) -> bool:
    return driver.execute_script("return typeof window.__pwned === 'undefined'")


def test_catalog_search_item_video_and_user(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    built, url = server
    browser.get(url + "/")
    assert "Catalog" in browser.find_element(By.TAG_NAME, "h1").text
    assert nothing_ran(browser)  # the catalog lists both hostile titles
    titles = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".card .title")]
    assert "<script>window.__pwned = 1</script>" in titles
    assert not_blank(browser, tmp_path / "catalog.png") > 5

    box = browser.find_element(By.ID, "q")
    box.send_keys("calm blue ocean waves")
    browser.find_element(By.ID, "go").click()
    wait_for(lambda: "nearest items to" in browser.page_source)
    browser.find_element(By.CSS_SELECTOR, f'#results a[href="/items/{built.video_id}"]').click()
    wait_for(lambda: browser.current_url.endswith(f"/items/{built.video_id}"))
    seconds = wait_for(lambda: browser.find_element(By.ID, "duration").get_attribute("data-seconds"))
    assert np.isfinite(float(seconds)) and float(seconds) > 0
    assert browser.execute_script("return document.getElementById('player').duration") == pytest.approx(
        float(seconds))
    # Seeking needs Range requests: the browser can jump into the middle of the video.
    browser.execute_script("const p = document.getElementById('player'); p.currentTime = p.duration / 2;")
    wait_for(lambda: browser.execute_script("return document.getElementById('player').seekable.length") > 0)
    assert not_blank(browser, tmp_path / "item.png") > 5
    assert "window.__pwned = 6" in browser.find_element(By.ID, "text-audio_description").text  # shown as text
    assert nothing_ran(browser)

    browser.get(f"{url}/items/{built.hostile_ids[0]}")
    assert browser.find_element(By.ID, "title").text == "<script>window.__pwned = 1</script>"
    assert "window.__pwned = 4" in browser.find_element(By.ID, "text-description").text
    assert nothing_ran(browser)
    browser.get(f"{url}/items/{built.hostile_ids[1]}")
    assert nothing_ran(browser)

    browser.get(f"{url}/users?run=compare/sasrec")
    browser.find_element(By.CSS_SELECTOR, ".users a").click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#recommended .card"))
    assert "score" in browser.find_element(By.ID, "recommended").text
    assert not_blank(browser, tmp_path / "user.png") > 5
    assert nothing_ran(browser)
