"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against a real
daemon process: counts change as clips are dropped in, a retrain triggered from the page
records its reason and its version appears, a rollback asks for confirmation. A
screenshot of each page is saved under the test's output folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from testkit.audio_files import WavWriter
from testkit.daemon_process import DaemonProcess, idle_daemon
from testkit.paths import BROWSER_TIMEOUT_MS, REPO_ROOT

pytestmark = pytest.mark.slow
SCREENSHOTS = REPO_ROOT / "test-output" / "dashboard"
TIMEOUT_MS = BROWSER_TIMEOUT_MS


def screenshot(page: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENSHOTS / path.name)  # kept after the run, for people to look at


def test_the_dashboard_follows_files_and_retrains_from_the_page(
    browser_page: Any, tmp_path: Path, yamnet_handle: str, write_wav: WavWriter
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    page = browser_page
    with idle_daemon(tmp_path, yamnet_handle) as daemon:
        url = daemon.http_url
        page.goto(url)
        expect(page.locator("#state")).to_have_text("idle")

        for i in range(5):  # dropped while the page is open: it updates by itself
            write_wav(daemon.audio / "gun_shot" / f"shot{i}.wav", "clicks", seed=i)
            write_wav(daemon.audio / "dog_bark" / f"bark{i}.wav", "tone", seed=i)
        for label in ("gun_shot", "dog_bark"):
            expect(page.locator(f'#classes tr[data-class="{label}"] td[data-key="embedded"]')).to_have_text("5")
            expect(page.locator(f'#classes tr[data-class="{label}"] td[data-key="pending"]')).to_have_text("0")
        screenshot(page, tmp_path, "status")

        page.click("text=Training")
        reason = "Browser test: new shots from camp 3"
        page.fill("#reason", reason)
        page.click("button[type=submit]")
        expect(page.locator("#trigger-answer")).to_contain_text("accepted")
        expect(page.locator("#log")).to_contain_text("retrain requested: HTTP: " + reason)
        expect(page.locator("#gate")).to_contain_text("v0001")
        expect(page.locator("#gate")).to_contain_text("HTTP: " + reason)
        expect(page.locator("#gate")).to_contain_text("gun_shot recall")
        screenshot(page, tmp_path, "training")
        assert daemon.retrain_log()[-1]["trigger_reason"] == "HTTP: " + reason
        page.click("text=Status")  # a version too small for a detector says so under the current model
        expect(page.locator("#detector")).to_contain_text("No event detector:")
        page.click("text=Training")

        second_version(page, daemon, write_wav)
        daemon.wait_idle()  # the run has written its report and export and let go of the retrain lock
        page.click("text=History")
        row = page.locator("#history-table tr", has_text="v0001")
        expect(row).to_contain_text(reason)
        expect(row.locator("a", has_text="report")).to_have_attribute("href", "/models/v0001/report.html")
        page.once("dialog", lambda dialog: dialog.dismiss())  # asked, and declined: nothing happens
        row.locator("button.rollback").click()
        expect(page.locator("#history-table tr", has_text="(current)")).to_contain_text("v0002")
        page.once("dialog", lambda dialog: dialog.accept())
        row.locator("button.rollback").click()
        expect(page.locator("#rollback-answer")).to_have_text("current model is now v0001 (was v0002)")
        newest = page.locator("#history-table tr").nth(1)  # row 0 is the header; the newest attempt first
        expect(newest).to_contain_text("rolled back")
        expect(newest).to_contain_text("v0001 (current)")
        expect(page.locator("#history-table button.rollback")).to_have_text("Roll back to v0002")
        screenshot(page, tmp_path, "history")
        assert daemon.retrain_log()[-1]["status"] == "rolled back"


def second_version(page: Any, daemon: DaemonProcess, write_wav: WavWriter) -> None:
    """One more promoted model, from one more clip (on unchanged data a retrain makes no new version)."""
    from playwright.sync_api import expect

    write_wav(daemon.audio / "gun_shot" / "shot_late.wav", "clicks", seed=42)
    daemon.wait_embedded("gun_shot/shot_late.wav")
    page.fill("#reason", "a second model")
    page.click("button[type=submit]")
    expect(page.locator("#gate")).to_contain_text("v0002")
    assert daemon.retrain_log()[-1]["status"] == "promoted", daemon.retrain_log()[-1]
