"""The console as an appointment book, in a real headless Chromium (Debian's package), driven by Playwright.

Each test has a database of its own, so the day view shows exactly the clinic the test made."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from hub.config import Settings
from tests.conftest import SECRET, make_dentist, needs, slot_at

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# The README's screenshots: refreshed with SCREENSHOTS=1, so a test run leaves the checkout clean.
IMG = Path(__file__).resolve().parent.parent / "docs" / "img" if os.environ.get("SCREENSHOTS") else None
pytestmark = needs(CHROMIUM is None, "LOUD SKIP: no Chromium found; `make test` installs Debian's chromium package "
                                    "as root (apt-get install chromium), or set CHROMIUM=/path/to/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture
def settings(settings: Settings, scratch_dsn: str) -> Settings:
    """A database of the test's own, so the book shows exactly the clinic the test made."""
    return dataclasses.replace(settings, database_url=scratch_dsn, clinic_timezone="UTC", webhook_allow_private=True)


@pytest.fixture
async def browser():
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        await launched.close()


def wire(iso: str) -> str:
    """A time as the API writes it (msgspec: UTC with Z)."""
    return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def base_of(api: Any) -> str:
    return str(api.client.make_url("")).rstrip("/")


async def open_console(browser: Any, base: str, token: str, path: str = "/admin", size=(1400, 1000),
                       before: Any = None) -> Any:
    """A desk in its own browser context, signed in through the `?token=` link (an HttpOnly cookie),
    with the book drawn and the socket live."""
    context = await browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = await context.new_page()
    if before is not None:
        await before(page)
    await page.goto(f"{base}/admin?token={token}")
    if path != "/admin":
        await page.goto(base + path)
    await page.wait_for_selector("#live:has-text('live')", timeout=5000)
    await page.wait_for_selector("#book .col", timeout=5000)
    return page


def free(dentist_id: str, when: str) -> str:
    return f'.col[data-dentist="{dentist_id}"] .free[data-start="{wire(when)}"]'


async def named_patient(api: Any, name: str) -> Any:
    patient = await api.user("patient")
    async with api.pool.acquire() as con:
        await con.execute("UPDATE public.profiles SET full_name = $2, phone = '+44 20 7946 0001' WHERE id = $1",
                          patient.id, name)
    return patient


async def test_two_desks_one_books_the_other_sees_it_within_a_second(api, clinic, browser) -> None:
    base = base_of(api)
    when = slot_at(days=3, hour=10)
    day = when[:10]
    await named_patient(api, "Zelda Quartermain")
    desk_a = await open_console(browser, base, clinic.admin.token, f"/admin?date={day}")
    desk_b = await open_console(browser, base, clinic.admin.token, f"/admin?date={day}")
    assert await desk_a.locator(".col").count() == 2  # one column per dentist
    await desk_a.click(free(clinic.dentist_id, when))
    await desk_a.fill("#book-search", "quarter")
    await desk_a.click("#book-results button.result:has-text('Zelda Quartermain')")
    await desk_a.wait_for_selector("#book-hold:has-text('held for this patient')", timeout=3000)
    # While the form is open the slot is held: the other desk sees a hatched hold with a countdown.
    await desk_b.wait_for_selector(f'.col[data-dentist="{clinic.dentist_id}"] .hold .countdown', timeout=1000)
    await desk_a.click("#book-submit")
    await desk_a.wait_for_selector("#book-dialog[open]", state="detached", timeout=3000)
    booked = f'.col[data-dentist="{clinic.dentist_id}"] .appt[data-start="{wire(when)}"]'
    started = time.monotonic()
    await desk_b.wait_for_selector(f"{booked}:has-text('Zelda Quartermain')", timeout=1000)
    print(f"the other desk showed the booking {time.monotonic() - started:.3f} s after the first desk's dialog closed")
    assert await desk_b.locator(f'.col[data-dentist="{clinic.dentist_id}"] .hold').count() == 0  # the hold became the booking
    # A change from another client (a patient's app) also appears without a reload.
    other = slot_at(days=3, hour=12)
    status, _ = await api.post("/api/appointments", clinic.patient, json={
        "dentist_id": clinic.other_dentist_id, "appointment_date": other, "appointment_type": "filling"})
    assert status == 201
    await desk_b.wait_for_selector(f'.col[data-dentist="{clinic.other_dentist_id}"] .appt[data-start="{wire(other)}"]',
                                   timeout=1000)
    await desk_a.context.close()
    await desk_b.context.close()


@pytest.fixture
def short_holds(settings: Settings) -> Settings:
    return dataclasses.replace(settings, hold_ttl_seconds=3)


async def test_a_hold_counts_down_and_leaves_the_book(aiohttp_client, short_holds, browser) -> None:
    from tests.conftest import Api
    from web import create_app

    api = Api(await aiohttp_client(create_app(short_holds)))
    admin, patient = await api.user("admin"), await api.user("patient")
    dentist_id = await make_dentist(api, admin)
    when = slot_at(days=2, hour=9)
    page = await open_console(browser, base_of(api), admin.token, f"/admin?date={when[:10]}")
    status, hold = await api.post(f"/api/availability/{dentist_id}/reservations", patient, json={"slot_time": when})
    assert status == 201, hold
    block = f'.hold[data-id="{hold["id"]}"]'
    await page.wait_for_selector(block, timeout=1000)
    assert ":0" in await page.inner_text(f"{block} .countdown")  # seconds left, ticking
    await page.wait_for_selector(block, state="detached", timeout=6000)
    await page.wait_for_selector(free(dentist_id, when), timeout=2000)  # bookable again
    await page.context.close()


async def test_drag_to_reschedule_and_conflicts_show_the_apis_message(api, clinic, browser) -> None:
    base = base_of(api)
    when, later, taken = slot_at(days=4, hour=10), slot_at(days=4, hour=13), slot_at(days=4, hour=15)
    status, appt = await api.post("/api/appointments", clinic.patient, json={
        "dentist_id": clinic.dentist_id, "appointment_date": when, "appointment_type": "checkup"})
    assert status == 201
    page = await open_console(browser, base, clinic.admin.token, f"/admin?date={when[:10]}")
    block = f'.appt[data-id="{appt["id"]}"]'
    await page.evaluate("document.querySelector('.book').scrollTop = 9 * 72")  # both times in view while dragging
    await page.drag_and_drop(block, free(clinic.dentist_id, later))
    await page.wait_for_selector(f'{block}[data-start="{wire(later)}"]', timeout=3000)
    status, moved = await api.get(f"/api/appointments/{appt['id']}", clinic.admin)
    assert moved["appointment_date"] == wire(later)

    # Another desk takes a time while this desk's form is open: the API's own message, not a silent failure.
    await named_patient(api, "Yusuf Late")
    await page.click(free(clinic.dentist_id, taken))
    status, _ = await api.post("/api/appointments", clinic.other_patient, json={
        "dentist_id": clinic.dentist_id, "appointment_date": taken, "appointment_type": "checkup"})
    assert status == 201
    await page.fill("#book-search", "Yusuf")
    await page.click("#book-results button.result:has-text('Yusuf Late')")
    await page.wait_for_selector("#book-error:not([hidden])", timeout=3000)
    status, refusal = await api.post(f"/api/availability/{clinic.dentist_id}/reservations", clinic.patient,
                                     json={"slot_time": taken})
    assert status == 409
    assert await page.inner_text("#book-error") == refusal["error"]["message"]
    await page.click("#book-cancel")

    # Cancelling asks for a reason and sends it.
    await page.click(block)
    await page.click("#appt-actions button:has-text('Cancel appointment')")
    await page.wait_for_selector("#appt-error:has-text('reason')", timeout=2000)
    await page.fill("#cancel-reason", "patient phoned in sick")
    await page.click("#appt-actions button:has-text('Cancel appointment')")
    await page.wait_for_selector(block, state="detached", timeout=3000)
    status, cancelled = await api.get(f"/api/appointments/{appt['id']}", clinic.admin)
    assert (cancelled["status"], cancelled["cancellation_reason"]) == ("cancelled", "patient phoned in sick")
    await page.context.close()


async def test_keyboard_only_booking(api, clinic, browser) -> None:
    await named_patient(api, "Keyla Board")
    when = slot_at(days=5, hour=9)
    page = await open_console(browser, base_of(api), clinic.admin.token, f"/admin?date={when[:10]}")
    target = free(clinic.dentist_id, when)
    await page.wait_for_selector(target)
    for _ in range(300):  # Tab through the page to the slot, as a keyboard user does
        await page.keyboard.press("Tab")
        if await page.evaluate(f"document.activeElement === document.querySelector('{target}')"):
            break
    else:
        raise AssertionError("the free slot is not reachable with Tab")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#book-dialog[open]")
    await page.keyboard.type("Keyla")
    await page.wait_for_selector("#book-results button.result")
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#book-hold:has-text('held')", timeout=3000)
    await page.keyboard.press("Enter")  # focus moved to Book
    await page.wait_for_selector(f'.appt[data-start="{wire(when)}"]:has-text("Keyla Board")', timeout=3000)
    # Moving without a mouse: Move… turns free slots into targets.
    await page.focus(f'.appt[data-start="{wire(when)}"]')
    await page.keyboard.press("Enter")
    await page.focus("#appt-actions button:has-text('Move')")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#moving:not([hidden])")
    later = slot_at(days=5, hour=11)
    await page.focus(free(clinic.dentist_id, later))
    await page.keyboard.press("Enter")
    await page.wait_for_selector(f'.appt[data-start="{wire(later)}"]:has-text("Keyla Board")', timeout=3000)
    await page.context.close()


@pytest.mark.parametrize(("day", "hours"), [("2026-10-25", 25), ("2027-03-28", 23), ("2026-11-30", 24)])
async def test_daylight_saving_days_have_their_true_length(aiohttp_client, settings, browser, day, hours) -> None:
    from tests.conftest import Api
    from web import create_app

    api = Api(await aiohttp_client(create_app(dataclasses.replace(settings, clinic_timezone="Europe/London"))))
    admin = await api.user("admin")
    await make_dentist(api, admin, timezone="Europe/London",
                       available_times={d: "08:00-17:00" for d in ("monday", "friday", "saturday", "sunday")})
    page = await open_console(browser, base_of(api), admin.token, f"/admin?date={day}")
    await page.wait_for_selector(".col")
    assert await page.get_attribute(".col", "data-hours") == str(hours)
    labels = await page.eval_on_selector_all(".axis .hour", "els => els.map(e => e.textContent)")
    assert len(labels) == hours
    if hours == 25:
        assert labels.count("01:00") == 2  # the hour the clocks go back, twice
    if hours == 23:
        assert "01:00" not in labels  # the hour the clocks skip
    # Working hours start at 08:00 local on both sides of the change.
    top = await page.evaluate("parseFloat(document.querySelector('.col .work').style.top)")
    eight = await page.evaluate("""() => { const h = [...document.querySelectorAll('.axis .hour')]
        .find(e => e.textContent === '08:00'); return parseFloat(h.style.top) }""")
    assert top == eight
    await page.context.close()


async def test_week_view_patient_panel_and_accessibility(api, clinic, browser) -> None:
    from axe_playwright_python.async_playwright import Axe

    patient = await named_patient(api, "Wilhelmina Search")
    when = slot_at(days=2, hour=11)
    status, appt = await api.post("/api/appointments", patient, json={
        "dentist_id": clinic.dentist_id, "appointment_date": when, "appointment_type": "filling"})
    assert status == 201
    page = await open_console(browser, base_of(api), clinic.admin.token,
                              f"/admin?view=week&dentist={clinic.dentist_id}&date={when[:10]}")
    assert await page.locator(".col").count() == 7
    await page.wait_for_selector(f'.appt[data-id="{appt["id"]}"]')
    axe = Axe()
    serious = lambda result: [v for v in result.response["violations"] if v["impact"] in ("serious", "critical")]  # noqa: E731
    assert serious(await axe.run(page)) == []
    # The patient panel: server-side search by phone digits, then their visits.
    await page.fill("#patient-search", "7946")
    await page.click("#patient-results button.result:has-text('Wilhelmina Search')")
    await page.wait_for_selector(f'#patient-panel:not([hidden]) li[data-id="{appt["id"]}"]', timeout=3000)
    assert "+44 20 7946 0001" in await page.inner_text("#patient-panel")
    # The booking dialog is accessible too.
    await page.click(free(clinic.dentist_id, slot_at(days=2, hour=14)))
    await page.wait_for_selector("#book-dialog[open]")
    assert serious(await axe.run(page)) == []
    await page.context.close()


async def test_socket_down_shows_a_banner_and_catches_up(api, clinic, browser) -> None:
    from web.app import REALTIME

    when = slot_at(days=6, hour=10)
    cut = asyncio.Event()

    async def through_a_switch(page: Any) -> None:
        """The page's sockets pass through Playwright; while `cut` is set, new ones are refused."""
        async def route(ws: Any) -> None:
            if cut.is_set():
                await ws.close(code=1006)
            else:
                ws.connect_to_server()
        await page.route_web_socket("**/realtime/v1/websocket*", route)

    page = await open_console(browser, base_of(api), clinic.admin.token, f"/admin?date={when[:10]}",
                              before=through_a_switch)
    cut.set()
    await api.client.app[REALTIME].close_all()  # the hub goes away; reconnecting fails while cut
    await page.wait_for_selector("#offline:not([hidden])", timeout=3000)
    status, appt = await api.post("/api/appointments", clinic.patient, json={
        "dentist_id": clinic.dentist_id, "appointment_date": when, "appointment_type": "checkup"})
    assert status == 201
    cut.clear()
    await page.wait_for_selector("#offline", state="hidden", timeout=8000)
    await page.wait_for_selector(f'.appt[data-id="{appt["id"]}"]', timeout=2000)  # caught up on reconnect
    await page.context.close()


async def test_editor_and_closures_still_work(api, clinic, browser) -> None:
    page = await open_console(browser, base_of(api), clinic.admin.token,
                              f"/admin?date={slot_at(days=3)[:10]}")
    await page.click("details.more > summary")
    await page.select_option("#hours-dentist", clinic.dentist_id)
    await page.fill('#hours input[name="monday"]', "9-5")
    await page.click('#hours button[type=submit]')
    await page.wait_for_selector("#hours-error:not([hidden])", timeout=2000)
    assert "monday" in await page.inner_text("#hours-error")
    for day in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"):
        await page.fill(f'#hours input[name="{day}"]', "09:00-10:00")
    await page.click('#hours button[type=submit]')
    await page.wait_for_selector("#hours-ok:has-text('Saved')", timeout=2000)
    await page.wait_for_function(
        f"document.querySelectorAll('.col[data-dentist=\"{clinic.dentist_id}\"] .free').length === 2", timeout=2000)
    closed = (datetime.now(timezone.utc) + timedelta(days=3)).date().isoformat()
    await page.fill('#closure input[name="day"]', closed)
    await page.fill('#closure input[name="reason"]', "staff training")
    await page.click('#closure button[type=submit]')
    await page.wait_for_selector(".col-head .badge.closure:has-text('staff training')", timeout=2000)
    await page.wait_for_selector("#health dt:has-text('messages sent')", timeout=3000)  # metrics summary
    await page.context.close()


async def test_a_dentist_sees_only_their_column_and_patients_are_refused(api, clinic, browser) -> None:
    base = base_of(api)
    page = await open_console(browser, base, clinic.dentist.token, size=(390, 844))
    columns = await page.eval_on_selector_all(".col", "els => els.map(e => e.dataset.dentist)")
    assert columns == [clinic.dentist_id]
    assert await page.evaluate("document.documentElement.scrollWidth") <= 391  # no sideways page scroll on a phone
    await page.goto(f"{base}/admin?view=week&dentist={clinic.other_dentist_id}")
    assert "not yours" in await page.inner_text("body")
    assert await page.evaluate("Object.keys(localStorage).length") == 0  # the token is never in localStorage
    await page.context.close()
    context = await browser.new_context()
    patient_page = await context.new_page()
    await patient_page.goto(f"{base}/admin?token={clinic.patient.token}")
    assert "for the clinic's admins and dentists" in await patient_page.inner_text("body")
    assert await patient_page.query_selector("#book") is None
    await patient_page.goto(base + "/admin?token=not-a-token")
    assert "malformed" in (await patient_page.inner_text("body")).lower()
    await context.close()


async def test_the_live_socket_is_one_per_page(api, clinic, browser) -> None:
    """Reloads on every change must not multiply the page's subscriptions."""
    when = slot_at(days=3, hour=16)
    page = await open_console(browser, base_of(api), clinic.admin.token, f"/admin?date={when[:10]}")
    from web.app import REALTIME

    for i in range(3):
        status, _ = await api.post("/api/appointments", clinic.patient, json={
            "dentist_id": clinic.dentist_id, "appointment_date": slot_at(days=3, hour=16 + i),
            "appointment_type": "checkup"})
        assert status == 201
        await page.wait_for_selector(f'.appt[data-start="{wire(slot_at(days=3, hour=16 + i))}"]', timeout=2000)
    assert len(api.client.app[REALTIME].sessions) == 1
    await page.context.close()


async def test_the_demo_clinic_looks_like_a_real_morning(aiohttp_client, settings, browser) -> None:
    """The demo `make run` creates, drawn: several dentists' day, a week, a patient panel (the README's
    screenshots, written with SCREENSHOTS=1)."""
    from services import demo
    from tests.conftest import Api
    from web import create_app

    api = Api(await aiohttp_client(create_app(dataclasses.replace(settings, clinic_timezone="Europe/London"))))
    async with api.pool.acquire() as con:
        clinic = await demo.create(con, SECRET)
    today = datetime.now(timezone.utc).date()
    day = next(today + timedelta(days=i) for i in range(1, 8) if (today + timedelta(days=i)).weekday() in (1, 2, 3))
    page = await open_console(browser, base_of(api), clinic["admin"]["token"], f"/admin?date={day}", size=(1440, 1000))
    assert await page.locator(".col").count() == len(clinic["dentists"])
    assert await page.locator(".appt").count() >= 12  # a busy day, with gaps left to book into
    assert await page.locator(".col-head .badge:has-text('behind')").count() == 1  # the New York dentist
    await page.evaluate("document.querySelector('.book').scrollTop = 8 * 72 - 20")
    await page.screenshot(path=str(IMG / "day.png") if IMG else None)
    hart = clinic["dentists"][0]
    await page.goto(f"{base_of(api)}/admin?view=week&dentist={hart['id']}&date={day}")
    await page.wait_for_selector(".col .appt")
    assert await page.locator(".col").count() == 7
    await page.evaluate("document.querySelector('.book').scrollTop = 8 * 72 - 20")
    await page.screenshot(path=str(IMG / "week.png") if IMG else None)
    await page.fill("#patient-search", clinic["patients"][0]["name"].split()[0])
    await page.click("#patient-results button.result")
    await page.wait_for_selector("#patient-panel:not([hidden]) ul.visits li")
    await page.screenshot(path=str(IMG / "patient.png") if IMG else None)
    await page.context.close()


async def test_admin_panels_waitlist_offers_and_webhooks(api, clinic, browser) -> None:
    when = slot_at(days=3, hour=10)
    await named_patient(api, "Walter Waiting")
    status, appt = await api.post("/api/appointments", clinic.patient, json={
        "dentist_id": clinic.dentist_id, "appointment_date": when, "appointment_type": "checkup"})
    assert status == 201
    waiter = (await api.get("/api/patients", clinic.admin, params={"q": "Walter"}))[1]["data"][0]
    status, entry = await api.post("/api/waitlist", clinic.admin, json={
        "patient_id": waiter["id"], "dentist_id": clinic.dentist_id, "appointment_type": "checkup",
        "earliest_date": when[:10], "latest_date": when[:10]})
    assert status == 201, entry
    page = await open_console(browser, base_of(api), clinic.admin.token, f"/admin?date={when[:10]}")
    await page.click("details.more > summary")
    await page.wait_for_selector(f'#waitlist tr[data-id="{entry["id"]}"]:has-text("Walter Waiting")')
    # A cancellation frees the slot: it is offered to the first in line, and the book marks the offer.
    status, _ = await api.delete(f"/api/appointments/{appt['id']}", clinic.patient)
    assert status == 200
    await page.wait_for_selector(f'.col[data-dentist="{clinic.dentist_id}"] .hold.offer:has-text("Walter Waiting")',
                                 timeout=3000)
    await page.wait_for_selector(f'#waitlist tr[data-id="{entry["id"]}"] td:has-text("until")', timeout=3000)
    # Webhooks: the secret is shown once, the endpoint listed, its deliveries readable.
    await page.fill('#webhook-form input[name="url"]', "http://127.0.0.1:9/hooks")
    await page.click('#webhook-form button[type=submit]')
    await page.wait_for_selector("#webhook-secret:has-text('whsec_')", timeout=3000)
    await page.wait_for_selector("#webhooks li:has-text('127.0.0.1:9')")
    await page.click("#webhooks li button:has-text('Deliveries')")
    await page.wait_for_selector("#deliveries-of:has-text('127.0.0.1:9')")
    await page.fill('#webhook-form input[name="url"]', "ftp://example.com/x")
    await page.click('#webhook-form button[type=submit]')
    await page.wait_for_selector("#webhook-error:not([hidden])", timeout=3000)  # the API's refusal, shown
    await page.context.close()
