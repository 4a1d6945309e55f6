"""The web dashboard in a real headless Chromium (Debian's ``chromium`` and ``chromedriver``,
installed by ``.ci/run``): sign in, counts that change after an enqueue, a job's output followed
live, a cancel with a control token, no control buttons for a read-only token, a phone-width
layout. Saves screenshots (``QUEUECTL_SCREENSHOTS=folder`` keeps them; the README's is one)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from .conftest import Queue
from .serving import Server, serving

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

if not (CHROMIUM and DRIVER):
    if os.environ.get("CI"):
        raise RuntimeError("CI needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    pytest.skip("chromium or chromedriver missing: the browser tests are skipped", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(name="server")
def server_fixture(queue: Queue) -> Iterator[Server]:
    queue.config(heartbeat=0.5)  # followed output arrives at each heartbeat
    yield from serving(queue)


@pytest.fixture(name="browser")
def browser_fixture() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def wait(browser: Any, condition: Callable[[], Any], timeout: float = 15, what: str = "") -> Any:
    """Until ``condition()`` holds; an element replaced by a re-render meanwhile is read again."""
    waiting = WebDriverWait(browser, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))
    return waiting.until(lambda _: condition(), what)


def text(browser: Any, element_id: str) -> str:
    return str(browser.find_element(By.ID, element_id).text)


def shown(browser: Any, element_id: str) -> bool:
    return bool(browser.find_element(By.ID, element_id).is_displayed())


def sign_in(browser: Any, server: Server, token: str) -> None:
    browser.delete_all_cookies()
    browser.get(server.base + "/")
    wait(browser, lambda: shown(browser, "login"), what="the sign-in form")
    browser.find_element(By.ID, "token").send_keys(server.tokens[token])
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait(browser, lambda: shown(browser, "view-dash") and text(browser, "who"), what="the dashboard")


def screenshot(browser: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    browser.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    keep = os.environ.get("QUEUECTL_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / name)
    return path


def test_the_dashboard_lives_follows_and_cancels(server: Server, browser: Any, tmp_path: Path) -> None:
    api = server.client("all")
    for n in range(3):
        api.post("/api/jobs", json={"command": f"echo build {n}", "queue": "builds", "labels": {"team": f"t{n}"}})
    api.post("/api/queues/hold/pause", params={"create": "1"})
    held = api.post("/api/jobs", json={"command": "sleep 60", "queue": "hold"}).json()["id"]

    sign_in(browser, server, "control")
    assert "control" in text(browser, "who")
    wait(browser, lambda: text(browser, "count-pending") == "4", what="4 pending")
    assert "4 shown of 4 matching" in text(browser, "jobs-shown")
    table = text(browser, "jobs")
    assert "labels" in table.splitlines()[0] and all(f"team=t{n}" in table for n in range(3))  # issue 15
    api.post("/api/jobs", json={"command": "echo one more", "queue": "builds"})
    wait(browser, lambda: text(browser, "count-pending") == "5", what="the count after an enqueue, live")
    assert "live" in text(browser, "live")
    buttons = lambda: [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#queues button.control")]  # noqa: E731
    wait(browser, lambda: buttons() == ["Pause", "Resume"], what="pause for builds, resume for hold (paused)")

    # a job's output, followed while it runs
    slow = api.post("/api/jobs", json={"command": "for i in 1 2 3 4; do echo step $i; sleep 0.6; done"}).json()["id"]
    server.queue.start_workers("--queue", "default")
    server.queue.wait_state(slow, "processing", 15)
    browser.get(f"{server.base}/#/job/{slow}")
    wait(browser, lambda: text(browser, "job-id") == slow, what="the job page")
    wait(browser, lambda: "step 1" in text(browser, "output") and "step 4" not in text(browser, "output"), what="live")
    assert shown(browser, "following")
    wait(browser, lambda: text(browser, "output").splitlines() == [f"step {i}" for i in range(1, 5)], what="all output")
    wait(browser, lambda: text(browser, "job-state") == "completed", what="completed")
    assert not shown(browser, "cancel")

    # cancel with a control token
    browser.get(f"{server.base}/#/job/{held}")
    wait(browser, lambda: text(browser, "job-id") == held and shown(browser, "cancel"), what="the cancel button")
    browser.find_element(By.ID, "cancel").click()
    wait(browser, lambda: text(browser, "job-state") == "cancelled", what="cancelled")
    assert server.queue.state(held) == "cancelled"

    browser.get(server.base + "/#/")
    wait(browser, lambda: text(browser, "count-completed") == "1", what="the dashboard again")
    screenshot(browser, tmp_path, "dashboard.png")

    # a phone-width screen: nothing wider than the screen (tables scroll inside their box)
    browser.set_window_size(390, 844)
    wait(browser, lambda: browser.execute_script("return innerWidth") <= 400, what="narrow window")
    overflow = browser.execute_script("return document.documentElement.scrollWidth - innerWidth")
    assert overflow <= 1
    screenshot(browser, tmp_path, "dashboard-phone.png")
    api.close()


def test_a_read_only_token_sees_no_control_buttons(server: Server, browser: Any) -> None:
    with server.client("all") as api:
        job = api.post("/api/jobs", json={"command": "sleep 60", "queue": "hold"}).json()["id"]
        api.post("/api/queues/hold/pause")
    sign_in(browser, server, "read")
    wait(browser, lambda: text(browser, "count-pending") == "1", what="the counts")
    assert "read" in text(browser, "who")
    assert browser.find_elements(By.CSS_SELECTOR, "button.control:not([hidden])") == []
    assert browser.find_elements(By.CSS_SELECTOR, "#queues button") == []
    browser.get(f"{server.base}/#/job/{job}")
    wait(browser, lambda: text(browser, "job-id") == job, what="the job page")
    assert not shown(browser, "cancel") and not shown(browser, "retry")
    # and the API refuses it anyway, whatever a page shows
    cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
    refused = httpx.post(
        f"{server.base}/api/jobs/{job}/cancel", cookies=cookies, headers={"X-CSRF-Token": cookies["queuectl_csrf"]}
    )
    assert refused.status_code == 403 and server.queue.state(job) == "pending"


def test_a_running_jobs_progress_shows_on_the_dashboard_and_its_page(server: Server, browser: Any) -> None:
    api = server.client("all")
    report = f"{sys.executable} -m queuectl progress 40/100 resizing"
    job_id = api.post("/api/jobs", json={"command": f"{report} && sleep 60"}).json()["id"]
    server.queue.start_workers()
    sign_in(browser, server, "read")

    def progress() -> str | None:
        reported = api.get(f"/api/jobs/{job_id}").json()["progress"]
        return reported["text"] if reported else None

    shown_text = wait(browser, progress, 20, what="the job's report stored")
    assert shown_text.startswith("40% resizing")  # the ETA is the rate so far: it moves
    cell = lambda: browser.find_element(By.CSS_SELECTOR, "#workers tbody tr td:last-child").text  # noqa: E731
    wait(browser, lambda: cell().startswith(f"{job_id} 40% resizing"), what="the progress in the workers table")
    browser.get(f"{server.base}/#/job/{job_id}")
    wait(browser, lambda: "40% resizing" in text(browser, "job-fields"), what="the progress on the job's page")
    api.post(f"/api/jobs/{job_id}/cancel")
    api.close()
