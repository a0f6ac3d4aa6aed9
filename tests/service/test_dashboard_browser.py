"""The dashboard in a real browser: Debian's headless Chromium (``apt-get install chromium
chromium-driver``) driven by Selenium against a live uvicorn server on a loopback port.

The browser logs in with an API key, opens every page, checks the figures it shows against the
API's answers, submits the try-it form, and is sent back to the login page without a valid key.
Screenshots go to the test's tmp_path, and to ``$PERSONA_ENGINE_SCREENSHOTS`` when it is set.

These tests fail, never skip, when Chromium, its driver or Selenium is missing: CI must run them.
Nothing is downloaded: Selenium is given the driver's path and ``SE_OFFLINE=true``.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from dashboard_support import (
    SHOP_ONLY,
    expected_summary_figures,
    fig,
    record_traffic,
)
from service_support import Api, make_engine

from persona_engine.service.app import create_app
from persona_engine.testing.browser import chromium, missing

try:  # a missing selenium must fail these tests, not skip them
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.ui import Select, WebDriverWait

    SELENIUM_ERROR: ImportError | None = None
except ImportError as e:
    SELENIUM_ERROR = e


pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(home: Path) -> Iterator[str]:
    """``create_app`` over the store in ``home`` under uvicorn, in a thread, on a free port."""
    port = _free_port()
    config = uvicorn.Config(
        create_app(make_engine(home)), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the dashboard's server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    if SELENIUM_ERROR is not None:
        pytest.fail(f"selenium is missing ({SELENIUM_ERROR}): pip install -e .[dev]")
    for path in missing():
        pytest.fail(f"{path} is missing: apt-get install -y chromium chromium-driver")
    monkeypatch.setenv("SE_OFFLINE", "true")  # restored after the test (chromium() sets it)
    driver = chromium(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()


class Screens:
    """Saves full-window screenshots to tmp_path and to $PERSONA_ENGINE_SCREENSHOTS if set."""

    def __init__(self, driver: WebDriver, tmp_path: Path):
        self.driver = driver
        self.dirs = [tmp_path / "screenshots"]
        if os.environ.get("PERSONA_ENGINE_SCREENSHOTS"):
            self.dirs.append(Path(os.environ["PERSONA_ENGINE_SCREENSHOTS"]))
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
        self.saved: list[Path] = []

    def take(self, name: str) -> None:
        path = self.dirs[0] / f"dashboard-{name}.png"
        assert self.driver.save_screenshot(str(path)), name
        assert path.read_bytes().startswith(b"\x89PNG")
        for d in self.dirs[1:]:
            shutil.copy(path, d / path.name)
        self.saved.append(path)


def _follow(driver: WebDriver, by: str, target: str) -> None:
    """Click ``target`` and wait until the browser has loaded the page it leads to."""
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(by, target).click()
    wait = WebDriverWait(driver, 30)
    wait.until(lambda _: _detached(page))
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")


def _detached(element: WebElement) -> bool:
    """Whether ``element`` belongs to a document the browser has left. Chromium answers a node of
    the old document either as stale or, mid-navigation, with "Node with given id does not belong
    to the document" (a plain WebDriverException, which ``staleness_of`` does not catch)."""
    try:
        element.is_enabled()
    except WebDriverException:  # StaleElementReferenceException included
        return True
    return False


def _figures(driver: WebDriver) -> dict[str, str]:
    return {
        e.get_attribute("data-figure"): e.text.strip()
        for e in driver.find_elements(By.CSS_SELECTOR, "[data-figure]")
    }


def _images_loaded(driver: WebDriver) -> list[int]:
    """Natural widths of the page's plots (0 for an image the browser could not decode)."""
    return [
        int(img.get_property("naturalWidth"))
        for img in driver.find_elements(By.CSS_SELECTOR, "img[data-plot]")
    ]


def _on_login_page(driver: WebDriver) -> bool:
    return driver.current_url.endswith("/dashboard/login") and bool(
        driver.find_elements(By.ID, "login-form")
    )


def test_the_dashboard_in_headless_chromium(
    trained_api: Api, browser: WebDriver, tmp_path: Path
) -> None:
    record_traffic(trained_api)
    screens = Screens(browser, tmp_path)
    with live_server(trained_api.engine.home) as url:
        api = httpx.Client(base_url=url, headers=trained_api.headers(), timeout=30)

        # no key: refused (the login page); a wrong key: refused with a message
        browser.get(f"{url}/dashboard/users")
        assert _on_login_page(browser)
        screens.take("login")
        browser.find_element(By.ID, "key").send_keys("pe_0000abcd_" + "z" * 43)
        _follow(browser, By.ID, "login-submit")
        assert _on_login_page(browser) and "invalid API key" in browser.page_source
        browser.find_element(By.ID, "key").send_keys(trained_api.keys[""])
        _follow(browser, By.ID, "login-submit")
        assert browser.current_url == f"{url}/dashboard"
        cookie = browser.get_cookie("persona_dashboard")
        assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        # overview: the figures of /v1/metrics/online, two plots drawn
        report = api.get("/v1/metrics/online").json()
        shown = _figures(browser)
        expected = expected_summary_figures(report["models"][0])
        assert {k: shown.get(k) for k in expected} == expected
        assert shown["counts:users"] == str(api.get("/v1/status").json()["users"])
        warnings = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "[data-warning]")]
        assert warnings == [report["models"][0]["warning"]]
        assert len(_images_loaded(browser)) == 2 and min(_images_loaded(browser)) > 100
        screens.take("overview")

        # users: the map and the list of the tenant's users, then coloured by an attribute
        _follow(browser, By.LINK_TEXT, "Users")
        assert _images_loaded(browser) and min(_images_loaded(browser)) > 100
        listed = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "a[data-user]")]
        assert "u1" in listed and SHOP_ONLY not in listed
        assert len(listed) == api.get("/v1/status").json()["users"]
        screens.take("users")
        Select(browser.find_element(By.ID, "colour")).select_by_value("age")
        _follow(browser, By.CSS_SELECTOR, "#map-form button")
        assert "colour=age" in browser.current_url and _images_loaded(browser)
        screens.take("users-by-attribute")

        # one user: figures against the API, then the try-it form
        _follow(browser, By.LINK_TEXT, "u1")
        assert browser.find_element(By.ID, "user-id").text == "u1"
        user = api.get("/v1/users/u1").json()
        assert _figures(browser)["user:comparisons"] == str(user["n_comparisons"])
        similar = api.post("/v1/similar-users", json={"user_id": "u1", "k": 10}).json()
        shown_similar = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "a[data-similar]")]
        assert shown_similar == [n["user_id"] for n in similar["neighbours"]]
        outcomes = trained_api.engine.store.online_outcomes(user_id="u1")
        accuracy = sum(o["correct"] for o in outcomes) / len(outcomes)
        assert _figures(browser)["outcomes:svc_peruser-v1:accuracy"] == fig(accuracy)
        screens.take("user")

        candidates = [
            "short 5",
            "a long and detailed answer about topic 5 with many careful words",
            "a middling answer 5",
        ]
        ranked = api.post(
            "/v1/rank", json={"user_id": "u1", "prompt": "question 5", "candidates": candidates}
        ).json()["ranking"]
        before = trained_api.engine.store.status()["counts"]
        browser.find_element(By.ID, "prompt").send_keys("question 5")
        browser.find_element(By.ID, "candidates").send_keys("\n".join(candidates))
        _follow(browser, By.ID, "rank-submit")
        rows = browser.find_elements(By.CSS_SELECTOR, "#ranking tr[data-rank]")
        shown_rank: list[tuple[str, Any]] = [
            (
                r.find_element(By.CSS_SELECTOR, "[data-candidate]").text,
                r.find_element(By.CSS_SELECTOR, "[data-score]").text,
            )
            for r in rows
        ]
        assert shown_rank == [(x["candidate"], f"{x['score']:.4f}") for x in ranked]
        assert trained_api.engine.store.status()["counts"] == before  # ranked, nothing stored
        screens.take("try-it")

        # logged out, and a browser without the cookie: every page is the login page
        _follow(browser, By.ID, "logout")
        assert _on_login_page(browser)
        for path in ("/dashboard", "/dashboard/users", "/dashboard/user?id=u1"):
            browser.get(url + path)
            assert (
                _on_login_page(browser)
                and "u1" not in browser.find_element(By.TAG_NAME, "main").text
            )
    assert len(screens.saved) == 6
