"""What a person sees when a call cannot happen, in a real headless Chromium against
real processes: microphone denied, token service refusing or gone, LiveKit
unreachable, agent never joining. No worker is needed for any of these."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from harness.devstack import ROOT, LiveKitServer, TokenService, free_port

pytestmark = pytest.mark.e2e

CHROMIUM_PATH = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
FAKE_MIC_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
DIST = ROOT / "frontend" / "dist"


def ensure_frontend() -> None:
    """Build frontend/dist when missing or stale (what `make frontend` does)."""
    p = subprocess.run(["make", "-s", "frontend"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if p.returncode != 0 or not (DIST / "index.html").exists():
        pytest.fail(f"building the frontend failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")


@dataclass
class Shown:
    kind: str
    title: str
    detail: str
    status: str


def read_error(page: Page) -> Shown:
    box = page.locator("#error")
    expect(box).to_be_visible(timeout=45_000)
    shown = Shown(
        kind=box.get_attribute("data-kind") or "",
        title=page.locator("#error-title").inner_text(),
        detail=page.locator("#error-detail").inner_text(),
        status=page.locator("#status").inner_text(),
    )
    body = page.locator("body").inner_text()
    # Never a raw stack trace or exception dump on the page.
    assert not re.search(r"\bat \S+ \(|\.js:\d+|Traceback|TypeError|undefined", body), body
    # The call can be started again.
    expect(page.get_by_role("button", name="Start call")).to_be_enabled()
    expect(page.get_by_role("button", name="End call")).to_be_disabled()
    return shown


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ensure_frontend()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM_PATH, headless=True, args=[*CHROMIUM_ARGS, *FAKE_MIC_ARGS])
        yield b
        b.close()


@pytest.fixture
def service(livekit_server: LiveKitServer, out_dir: Path):
    started: list[TokenService] = []

    def _start(**env: str) -> TokenService:
        svc = TokenService(env={**livekit_server.env(), "PARLEY_TOKEN_API_KEY": "", **env})
        started.append(svc.start(out_dir / "logs", name="parley-tokens-errors"))
        return svc

    yield _start
    for svc in started:
        svc.stop()


def shot(page: Page, out_dir: Path, name: str) -> None:
    page.screenshot(path=str(out_dir / f"browser-error-{name}.png"), full_page=True)


def test_microphone_denied(service, out_dir: Path) -> None:
    svc = service()
    with sync_playwright() as p:
        # No fake-UI flag: the permission prompt appears and Playwright denies it.
        b = p.chromium.launch(executable_path=CHROMIUM_PATH, headless=True,
                              args=[*CHROMIUM_ARGS, "--use-fake-device-for-media-stream"])
        try:
            context = b.new_context(permissions=[])
            page = context.new_page()
            token_requests: list[str] = []
            page.on("request", lambda r: token_requests.append(r.url) if "/api/token" in r.url else None)
            page.goto(svc.url)
            page.get_by_role("button", name="Start call").click()
            shown = read_error(page)
            shot(page, out_dir, "mic-denied")
        finally:
            b.close()
    assert shown.kind == "mic-denied", shown
    assert "Microphone access was denied" in shown.title
    assert "Allow it" in shown.detail
    assert token_requests == [], "no token may be requested for a caller without a microphone"


def test_token_refused_without_key(service, browser: Browser, out_dir: Path) -> None:
    svc = service(PARLEY_TOKEN_API_KEY="a-very-secret-key")
    page = browser.new_page()
    page.goto(svc.url)
    page.get_by_role("button", name="Start call").click()
    shown = read_error(page)
    shot(page, out_dir, "token-refused")
    page.close()
    assert shown.kind == "token-refused", shown
    assert "refused" in shown.title
    assert "HTTP 401" in shown.detail and "#key=" in shown.detail


def test_token_service_unreachable(service, browser: Browser, out_dir: Path) -> None:
    svc = service()
    page = browser.new_page()
    page.goto(svc.url)
    expect(page.get_by_role("button", name="Start call")).to_be_enabled()
    svc.stop()  # the page is loaded; the service is gone when the person presses Start
    page.get_by_role("button", name="Start call").click()
    shown = read_error(page)
    shot(page, out_dir, "token-unreachable")
    page.close()
    assert shown.kind == "token-unreachable", shown
    assert "unreachable" in shown.title and "/api/token" in shown.detail


def test_livekit_unreachable(service, browser: Browser, out_dir: Path) -> None:
    dead = f"ws://127.0.0.1:{free_port()}"  # nothing listens here
    # The token service reaches LiveKit (it counts calls there); the browser is handed a
    # URL it cannot reach. No worker serves the agent: the opened room takes no one's job.
    svc = service(PARLEY_LIVEKIT_PUBLIC_URL=dead, PARLEY_AGENT_NAME="parley-nobody-home")
    page = browser.new_page()
    page.goto(f"{svc.url}/?connectTimeout=15")
    page.get_by_role("button", name="Start call").click()
    shown = read_error(page)
    shot(page, out_dir, "livekit-unreachable")
    page.close()
    assert shown.kind == "livekit-unreachable", shown
    assert "call server" in shown.title and dead in shown.detail


def test_agent_never_joins(service, browser: Browser, out_dir: Path) -> None:
    # A key in the page's #fragment authenticates; no worker serves this agent name.
    svc = service(PARLEY_TOKEN_API_KEY="k3y-for-test", PARLEY_AGENT_NAME="nobody-home")
    page = browser.new_page()
    page.goto(f"{svc.url}/?agentTimeout=4#key=k3y-for-test")
    page.get_by_role("button", name="Start call").click()
    expect(page.locator("#status")).to_contain_text("Waiting for the agent", timeout=20_000)
    shown = read_error(page)
    shot(page, out_dir, "agent-timeout")
    page.close()
    assert shown.kind == "agent-timeout", shown
    assert "did not join" in shown.title and "4 s" in shown.detail


@pytest.mark.parametrize(("name", "width", "height"), [("mobile", 360, 740), ("desktop", 1280, 800)])
def test_layout_fits_and_is_labelled(service, browser: Browser, out_dir: Path, name: str, width: int,
                                     height: int) -> None:
    svc = service()
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(svc.url)
    # Nothing wider than the screen; every control reachable by its accessible name.
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"page is {overflow}px wider than a {width}px screen"
    for label in ("Start call", "Mute", "End call", "Send"):
        box = page.get_by_role("button", name=label).bounding_box()
        assert box and box["height"] >= 44 and box["x"] >= 0 and box["x"] + box["width"] <= width, (label, box)
    expect(page.get_by_label("Type a message to the agent")).to_be_visible()
    expect(page.get_by_role("log")).to_be_attached()
    expect(page.get_by_role("status")).to_contain_text("Start call")
    page.screenshot(path=str(out_dir / f"browser-idle-{name}.png"), full_page=True)
    page.close()
