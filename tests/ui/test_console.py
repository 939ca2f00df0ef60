"""The web console (SPEC §9) in a real headless Chromium, against the daemon as a subprocess.

Playwright drives Debian's /usr/bin/chromium (never a downloaded browser). The page may
talk to nothing but the daemon, log no error, and keep the token out of the daemon's log;
a viewer sees no action; an admin's retry and pause show in the JSON API; the page
refreshes by itself and says when the daemon is unreachable. It also takes the
screenshots the README shows: into docs/ with WAHOOKD_UPDATE_SCREENSHOTS=1, else into the
test's temporary directory (so a test run leaves the checkout clean).
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from daemon_proc import DaemonProcess, cli, free_port
from support import Received, Receiver, Reply, ca_file, eventually

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"
UPDATE_SCREENSHOTS = os.environ.get("WAHOOKD_UPDATE_SCREENSHOTS") == "1"
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--metrics-recording-only",
]
ACTION = re.compile(r"^(Retry|Pause|Resume|Clear|Test|Send test)")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
    ),
]

playwright_api = pytest.importorskip("playwright.async_api", reason="pip install playwright")


async def run(cmd: list[str], cwd: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (cmd, err.decode())
    return out.decode()


class Api:
    """The daemon's JSON API with one token."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http, self.base, self.token = http, base, token

    async def __call__(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as resp:
            answer = await resp.json()
            assert resp.status < 300, (method, path, resp.status, answer)
            return answer


def event(n: int) -> dict[str, Any]:
    return {
        "event": "message.received",
        "sessionId": "sales",
        "messageId": f"msg_{n}",
        "from": "491701234567@c.us",
        "to": "me",
        "type": "text",
        "text": f"Hello #{n}, is the order ready?",
    }


async def test_console_in_a_real_browser(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    port = free_port()
    config = tmp_path / "wahookd.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n'
        f'[storage]\npath = "{tmp_path / "data" / "wahookd.db"}"\n'
        f'[delivery]\nca_file = "{ca_file(ca, tmp_path)}"\n'
        'allow_networks = ["127.0.0.0/8"]\nretry_schedule = ["1s"]\n'
    )
    # /crm answers 503 until told otherwise: its deliveries fail after two attempts
    crm_down = {"now": True}

    def respond(got: Received) -> Reply:
        if got.path == "/crm" and crm_down["now"]:
            return Reply(status=503, body=b'{"error": "maintenance"}')
        return Reply(status=200, body=b'{"ok": true}')

    receiver.responder = respond
    daemon = DaemonProcess(config, port, tmp_path)
    await daemon.start()
    try:
        admin_url = (await run(cli("console", "-c", str(config)), tmp_path)).strip()
        viewer_url = (
            await run(cli("console", "-c", str(config), "--role", "viewer"), tmp_path)
        ).strip()
        assert admin_url.startswith(f"{daemon.base}/ui/#token=")
        admin_token = admin_url.split("#token=")[1]
        viewer_token = viewer_url.split("#token=")[1]
        async with aiohttp.ClientSession() as http:
            api = Api(http, daemon.base, admin_token)
            await setup_data(api, receiver)
            await eventually(
                lambda: failed_count(api, 2), timeout_s=20, what="two failed deliveries"
            )
            shots = DOCS if UPDATE_SCREENSHOTS else tmp_path
            await browse(daemon, api, admin_url, viewer_token, receiver, crm_down, shots)
            await eventually(lambda: retried_one_delivered(api), timeout_s=20, what="retry")
        for name in ("console-overview.png", "console-delivery.png"):
            assert (shots / name).read_bytes().startswith(b"\x89PNG"), name
        log = daemon.log()
        for token in (admin_token, viewer_token):
            assert token not in log
            assert token.split(".")[2] not in log  # not even its signature
    finally:
        await daemon.stop()


async def setup_data(api: Api, receiver: Receiver) -> None:
    """Session `sales`: a default webhook that answers, an extra one that fails; events."""
    await api(
        "PUT",
        "/api/webhook/config/sales",
        {"url": receiver.url, "events": ["*"], "secret": "whsec_c2VjcmV0LXNpZ25pbmcta2V5"},
    )
    crm = receiver.url.replace("/hook", "/crm")
    await api(
        "POST",
        "/api/webhooks",
        {
            "sessionId": "sales",
            "url": crm,
            "events": ["message.received"],
            "secret": "crm-signing-secret",
            "description": "CRM sync",
        },
    )
    await api(
        "PUT",
        "/api/webhook/config/support",
        {"url": receiver.url, "events": ["session.connected", "session.disconnected"]},
    )
    await api("POST", "/api/events", {"events": [event(n) for n in range(1, 3)]})
    await api(
        "POST",
        "/api/events",
        {"event": "session.connected", "sessionId": "support", "phoneNumber": "4915112345"},
    )


async def failed_count(api: Api, n: int) -> bool:
    answer = await api("GET", "/api/webhook/queue?sessionId=sales")
    return bool(answer["queue"]["failed"] >= n)


RETRIED: list[str] = []


async def retried_one_delivered(api: Api) -> bool:
    (uid,) = RETRIED
    answer = await api("GET", f"/api/webhook/deliveries/sales/{uid}")
    return bool(answer["delivery"]["status"] == "delivered")


async def browse(
    daemon: DaemonProcess,
    api: Api,
    admin_url: str,
    viewer_token: str,
    receiver: Receiver,
    crm_down: dict[str, bool],
    shots: Path,
) -> None:
    from playwright.async_api import async_playwright, expect

    requests: list[str] = []
    errors: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = await browser.new_context(
                viewport={"width": 1280, "height": 800},
                locale="en-GB",
                timezone_id="Europe/Berlin",
            )
            page = await context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on(
                "console",
                lambda m: (
                    errors.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))

            # --- admin: the overview from the URL `wahookd console` printed
            await page.goto(admin_url)
            await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
            assert "#token=" not in page.url  # dropped from the address bar and history
            queue = (await api("GET", "/api/webhook/queue"))["queue"]
            failed = page.locator('[data-count="failed"]')
            await expect(failed).to_have_text(str(queue["failed"]))
            caption = page.locator("figure.chart figcaption")
            await expect(caption).to_contain_text("2 failed")
            # failing webhooks first
            first_row = (
                page.locator("section", has_text="Webhooks, failing first")
                .locator("tbody tr")
                .first
            )
            await expect(first_row).to_contain_text("CRM sync")
            await expect(first_row).to_contain_text("failing")
            # times: local on the page, UTC on hover
            stamp = first_row.locator("time").first
            assert (await stamp.get_attribute("title") or "").endswith("Z (UTC)")
            await page.screenshot(path=str(shots / "console-overview.png"))

            # it refreshes by itself: a new event shows up without a reload
            found = re.search(r"(\d+) delivered", await caption.inner_text())
            assert found is not None
            delivered_before = int(found.group(1))
            box = await page.locator("figure.chart").bounding_box()
            await api(
                "POST",
                "/api/events",
                {"event": "session.disconnected", "sessionId": "support", "reason": "logout"},
            )
            await expect(caption).to_contain_text(
                f"{delivered_before + 1} delivered", timeout=15000
            )
            assert await page.locator("figure.chart").bounding_box() == box  # no layout jump

            # --- the delivery log, filtered to failed, then one delivery
            await page.get_by_role("link", name="Deliveries").click()
            await page.get_by_label("State").select_option("failed")
            await page.get_by_role("button", name="Show").click()
            rows = page.locator("tbody tr[data-delivery]")
            await expect(rows).to_have_count(2)
            uid = await rows.first.get_attribute("data-delivery")
            assert uid
            await rows.first.get_by_role("link").click()
            await expect(
                page.get_by_role("heading", name="Headers sent (attempt 2)")
            ).to_be_visible()
            await expect(page.locator("tr.signature")).to_have_count(2)
            await expect(page.locator("pre.body")).to_contain_text('"messageId": "msg_')
            await expect(page.locator("pre.excerpt").first).to_contain_text("maintenance")
            await page.screenshot(path=str(shots / "console-delivery.png"), full_page=True)

            # admin: retry it; the JSON API sees it leave `failed`
            RETRIED.append(uid)
            crm_down["now"] = False
            await page.get_by_role("button", name=f"Retry {uid}").click()
            await expect(page.locator("#status")).to_contain_text("done")
            detail = await api("GET", f"/api/webhook/deliveries/sales/{uid}")
            assert detail["delivery"]["status"] != "failed"

            # admin: pause the default webhook; the JSON API reports it inactive
            await page.get_by_role("link", name="Webhooks").click()
            await page.get_by_role("button", name=f"Pause {receiver.url} (sales)").click()
            await expect(
                page.get_by_role("button", name=f"Resume {receiver.url} (sales)")
            ).to_be_visible()
            hooks = (await api("GET", "/api/webhooks?sessionId=sales"))["webhooks"]
            (default,) = [w for w in hooks if w["default"]]
            assert default["isActive"] is False
            await page.get_by_role("button", name=f"Resume {receiver.url} (sales)").click()
            await expect(
                page.get_by_role("button", name=f"Pause {receiver.url} (sales)")
            ).to_be_visible()

            # clearing a queue asks first; dismissed, nothing is dropped
            await page.get_by_role("link", name="Sessions").click()
            dialogs: list[str] = []

            async def dismiss(d: Any) -> None:
                dialogs.append(d.message)
                await d.dismiss()

            page.once("dialog", dismiss)
            await page.get_by_role("button", name="Clear the queue of sales").click()
            await eventually(lambda: bool(dialogs), what="a confirmation")
            assert "Drop the" in dialogs[0]
            assert (await api("GET", "/api/webhook/queue?sessionId=sales"))["queue"]["failed"] == 1

            # admin: retry the session's failed deliveries of the last 2 hours
            await page.get_by_label("Retry failed since").fill("2h")
            await page.get_by_role("button", name="Retry failed deliveries of sales").click()
            await expect(page.locator("#status")).to_contain_text("Queued 1 failed deliveries")

            # the keyboard reaches the views: Tab from the top to a nav link, Enter
            await page.focus("header h1 a")
            for _ in range(3):
                await page.keyboard.press("Tab")
            assert await page.evaluate("document.activeElement.textContent") == "Webhooks"
            await page.keyboard.press("Enter")
            await expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()

            # phone width: nothing wider than the screen (tables scroll in their box)
            await page.set_viewport_size({"width": 390, "height": 844})
            await page.get_by_role("link", name="Overview").click()
            await expect(failed).to_be_visible()
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, width

            # --- viewer: pastes a token, sees everything and no action
            viewer = await context.new_page()
            viewer.on("request", lambda r: requests.append(r.url))
            viewer.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            viewer.on(
                "console",
                lambda m: (
                    errors.append(f"viewer console {m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            await viewer.goto(f"{daemon.base}/ui/")
            await viewer.get_by_label("JWT").fill(viewer_token)
            await viewer.get_by_role("button", name="Use this token").click()
            await expect(viewer.get_by_role("heading", name="Overview")).to_be_visible()
            await expect(viewer.locator("#role")).to_have_text("role: viewer")
            for view in ("Overview", "Sessions", "Webhooks", "Deliveries"):
                await viewer.get_by_role("link", name=view, exact=True).click()
                await expect(viewer.locator(".view-body")).to_have_attribute("aria-busy", "false")
                assert await viewer.get_by_role("button", name=ACTION).count() == 0, view
            await viewer.goto(f"{daemon.base}/ui/#/delivery/sales/{uid}")
            await expect(viewer.get_by_role("heading", name="Attempts")).to_be_visible()
            assert await viewer.get_by_role("button", name=ACTION).count() == 0
            await viewer.close()

            assert errors == []
            outside = [u for u in requests if not u.startswith(daemon.base + "/")]
            assert outside == []
            assert not [u for u in requests if api.token in u or viewer_token in u]

            # --- the daemon goes away: the page says so and hides its numbers
            await daemon.stop()
            await expect(page.locator("#status")).to_contain_text("unreachable", timeout=15000)
            await expect(failed).to_be_hidden()
            await daemon.start()
            await expect(page.locator("#status")).to_contain_text("Connected again", timeout=30000)
            await expect(failed).to_be_visible()
        finally:
            await browser.close()
