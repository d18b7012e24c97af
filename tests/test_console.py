"""The admin console in a real headless Chromium (Debian's package), driven by Playwright."""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import needs, slot_at

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# The README's screenshots: refreshed with SCREENSHOTS=1, so a test run leaves the checkout clean.
IMG = Path(__file__).resolve().parent.parent / "docs" / "img" if os.environ.get("SCREENSHOTS") else None
pytestmark = needs(CHROMIUM is None, "LOUD SKIP: no Chromium found; `make test` installs Debian's chromium package "
                                    "as root (apt-get install chromium), or set CHROMIUM=/path/to/chromium")


@pytest.fixture
async def browser():
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield launched
        await launched.close()


def wire(iso: str) -> str:
    """A time as the API writes it (msgspec: UTC with Z)."""
    return datetime.fromisoformat(iso).strftime("%Y-%m-%dT%H:%M:%SZ")


async def sign_in(browser, base: str, token: str, path: str = "/admin", size=(1280, 900)):
    page = await browser.new_page(viewport={"width": size[0], "height": size[1]})
    await page.goto(base + "/admin")
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await page.wait_for_load_state()
    if path != "/admin":
        await page.goto(base + path)
    return page


async def test_board_updates_live_and_editor_shows_errors(api, clinic, browser) -> None:
    base = str(api.client.make_url("")).rstrip("/")
    when = slot_at(days=3, hour=10)
    page = await sign_in(browser, base, clinic.admin.token, f"/admin?dentist={clinic.dentist_id}&date={when[:10]}")
    await page.wait_for_selector(f'.slot[data-start="{wire(when)}"][data-status="free"]', timeout=5000)
    await page.wait_for_selector("#live:has-text('live')", timeout=5000)

    # A booking made over the API appears within a second, without a reload.
    status, appt = await api.post("/api/appointments", clinic.patient, json={
        "dentist_id": clinic.dentist_id, "appointment_date": when, "appointment_type": "checkup"})
    assert status == 201
    await page.wait_for_selector(f'.slot[data-start="{wire(when)}"][data-status="busy"]', timeout=1000)
    await page.wait_for_selector(f'tr[data-id="{appt["id"]}"][data-status="pending"]', timeout=1000)
    # A hold shows as held, then goes away when released.
    held_at = slot_at(days=3, hour=12)
    status, hold = await api.post(f"/api/availability/{clinic.dentist_id}/reservations", clinic.other_patient,
                                  json={"slot_time": held_at})
    await page.wait_for_selector(f'.slot[data-start="{wire(held_at)}"][data-status="busy-tentative"]', timeout=1000)
    await api.delete(f"/api/reservations/{hold['id']}", clinic.other_patient)
    await page.wait_for_selector(f'.slot[data-start="{wire(held_at)}"][data-status="free"]', timeout=1000)
    await page.screenshot(path=str(IMG / "board.png") if IMG else None, full_page=True)

    # Confirm from the console, then cancel: the slot frees.
    await page.click(f'tr[data-id="{appt["id"]}"] button:has-text("Confirm")')
    await page.wait_for_selector(f'tr[data-id="{appt["id"]}"][data-status="confirmed"]', timeout=2000)
    await page.click(f'tr[data-id="{appt["id"]}"] button:has-text("Cancel")')
    await page.wait_for_selector(f'tr[data-id="{appt["id"]}"][data-status="cancelled"]', timeout=2000)
    await page.wait_for_selector(f'.slot[data-start="{wire(when)}"][data-status="free"]', timeout=1000)

    # The editor: a bad range is refused inline; good hours change the slots shown.
    await page.fill('#hours input[name="monday"]', "9-5")
    await page.click('#hours button[type=submit]')
    await page.wait_for_selector("#hours-error:not([hidden])", timeout=2000)
    assert "monday" in await page.inner_text("#hours-error")
    for day in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"):
        await page.fill(f'#hours input[name="{day}"]', "09:00-10:00")
    await page.click('#hours button[type=submit]')
    await page.wait_for_selector("#hours-ok:has-text('Saved')", timeout=2000)
    await page.wait_for_function("document.querySelectorAll('#board .slot').length === 2", timeout=2000)
    await page.wait_for_selector("#health dt:has-text('messages sent')", timeout=2000)  # metrics summary
    await page.screenshot(path=str(IMG / "editor.png") if IMG else None, full_page=True)
    await page.close()


async def test_console_on_a_phone_and_for_a_dentist(api, clinic, browser) -> None:
    base = str(api.client.make_url("")).rstrip("/")
    page = await sign_in(browser, base, clinic.dentist.token, size=(390, 844))
    options = await page.eval_on_selector_all("#dentist option", "els => els.map(e => e.value)")
    assert options == [clinic.dentist_id]  # a dentist sees only their own schedule
    await page.wait_for_selector(".slot", timeout=5000)
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390 + 1  # no sideways scrolling on a phone
    await page.goto(f"{base}/admin?dentist={clinic.other_dentist_id}")
    assert "not yours" in await page.inner_text("body")
    await page.close()


async def test_patients_cannot_open_the_console(api, clinic, browser) -> None:
    base = str(api.client.make_url("")).rstrip("/")
    page = await sign_in(browser, base, clinic.patient.token)
    assert "for the clinic's admins and dentists" in await page.inner_text("body")
    assert await page.query_selector("#board") is None
    bad = await browser.new_page()
    await bad.goto(base + "/admin?token=not-a-token")
    assert "malformed" in (await bad.inner_text("body")).lower()
    await page.close()
    await bad.close()
