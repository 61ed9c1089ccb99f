"""A real browser call through the whole stack: headless Debian Chromium (Playwright)
with a fake microphone playing a fixture WAV -> the page served by parley-tokens ->
a token from parley-tokens -> real livekit-server -> the Parley worker."""

from __future__ import annotations

import json
import re
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from agent.settings import Settings
from harness.devstack import LiveKitServer, TokenService, Worker

from .conftest import wait_for
from .test_browser_errors import CHROMIUM_ARGS, CHROMIUM_PATH, ensure_frontend

pytestmark = pytest.mark.e2e

# Seconds of silence before the question, so the greeting (which cannot be talked
# over) is finished before the caller speaks.
LEAD_SILENCE_S = 9.0
CHAT_QUESTION = "What is the capital of Italy?"
CHAT_KEYWORD = "rome"


def padded_wav(src: Path, dst: Path, lead_s: float, tail_s: float) -> Path:
    with wave.open(str(src), "rb") as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    assert width == 2 and channels == 1, f"{src} must be 16-bit mono PCM"
    silence_lead = np.zeros(int(rate * lead_s), dtype=np.int16)
    silence_tail = np.zeros(int(rate * tail_s), dtype=np.int16)
    with wave.open(str(dst), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.concatenate([silence_lead, pcm, silence_tail]).tobytes())
    return dst


@pytest.fixture(scope="module")
def web(livekit_server: LiveKitServer, worker: Worker, out_dir: Path):
    ensure_frontend()
    svc = TokenService(env={**livekit_server.env(), "PARLEY_TOKEN_API_KEY": "",
                            "PARLEY_AGENT_NAME": Settings.load().agent_name})
    svc.start(out_dir / "logs", name="parley-tokens-browser")
    yield svc
    svc.stop()


def wait_worker_idle(worker: Worker, timeout: float = 90.0) -> None:
    """LiveKit offers a room's agent job once; a worker that reports itself full at that
    moment (CPU busy with the browser starting) would never join. Wait for a calm worker."""
    deadline = time.monotonic() + timeout
    calm = 0
    while time.monotonic() < deadline:
        code, body = worker.health("/worker")
        info = json.loads(body) if code == 200 else {"worker_load": 1.0}
        # protobuf JSON leaves out zero values: no "worker_load" means 0.0
        calm = calm + 1 if info.get("worker_load", 0.0) < 0.5 and not info.get("active_jobs") else 0
        if calm >= 3:
            return
        time.sleep(0.5)
    pytest.fail(f"worker still busy after {timeout:.0f}s: {body}")


def agent_lines(page: Page):
    return page.locator("#transcript li.agent .text")


def report_with_listener_figure(report_dir: Path, since: float, heard_ms: float) -> dict | None:
    """The session report written after `since` whose turn carries the page's figure."""
    for path in report_dir.glob("*.json"):
        if path.stat().st_mtime < since:
            continue
        report = json.loads(path.read_text())
        if any(t.get("listener_latency_ms") is not None and abs(t["listener_latency_ms"] - heard_ms) < 1.0
               for t in report.get("turns", [])):
            return report
    return None


def test_browser_call_greeting_voice_and_chat(web: TokenService, worker: Worker, fixtures: Path,
                                             out_dir: Path, report_dir: Path, tmp_path: Path) -> None:
    wav = padded_wav(fixtures / "capital_france.wav", tmp_path / "mic.wav", LEAD_SILENCE_S, 2.0)
    console: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM_PATH,
            headless=True,
            args=[*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                  # %noloop: the question is spoken once, then the microphone stays silent
                  f"--use-file-for-fake-audio-capture={wav}%noloop",
                  "--autoplay-policy=no-user-gesture-required"],
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.goto(web.url)
            expect(page.get_by_role("heading", name="Parley")).to_be_visible()
            wait_worker_idle(worker)
            t0 = time.monotonic()
            page.get_by_role("button", name="Start call").click()

            # The greeting is spoken and transcribed on the page.
            greeting = Settings.load().greeting
            expect(agent_lines(page).first).to_contain_text(greeting.split(",")[0], timeout=60_000)
            expect(page.locator("#error")).to_be_hidden()
            expect(page.get_by_role("button", name="End call")).to_be_enabled()
            greeted_s = time.monotonic() - t0

            # The spoken question is transcribed and answered.
            heard = page.locator("#transcript li.user .text").filter(has_text=re.compile("capital", re.I))
            expect(heard.first).to_be_visible(timeout=90_000)
            paris = agent_lines(page).filter(has_text=re.compile("paris", re.I))
            expect(paris.first).to_be_visible(timeout=90_000)
            answered_s = time.monotonic() - t0
            # The agent's voice plays in the page (an attached <audio> element whose clock runs).
            playing = """() => [...document.querySelectorAll('audio')].some(a => !a.paused && a.currentTime > 1)"""
            page.wait_for_function(playing, timeout=10_000)
            state = page.locator("#agent-state").get_attribute("data-state")
            assert state in ("listening", "thinking", "speaking"), state

            # Listener's-ear latency: the page measured the spoken turn (its own VAD on the
            # microphone, an analyser on the agent's track) and drew the agent's stages beside it.
            row = page.locator("#waterfall li.turn[data-heard-ms]").first
            expect(row).to_be_visible(timeout=30_000)
            expect(row.locator(".bar.llm")).to_have_count(1, timeout=30_000)
            expect(row.locator(".bar.net")).to_have_count(1)
            heard_ms = float(row.get_attribute("data-heard-ms") or "nan")
            assert 100 < heard_ms < 20_000, heard_ms
            started_wall = time.time() - (time.monotonic() - t0)
            shot = out_dir / "browser-call.png"
            page.screenshot(path=str(shot), full_page=True)
            page.locator("#latency").screenshot(path=str(out_dir / "browser-waterfall.png"))

            # Chat: a typed question gets an answer from the agent.
            before = agent_lines(page).count()
            page.get_by_label("Type a message to the agent").fill(CHAT_QUESTION)
            page.get_by_role("button", name="Send").click()
            expect(page.locator("#transcript li.user", has_text="You (typed)")).to_contain_text(CHAT_QUESTION)
            expect(agent_lines(page).nth(before)).to_contain_text(re.compile(r"\w"), timeout=90_000)
            expect(agent_lines(page).filter(has_text=re.compile(CHAT_KEYWORD, re.I)).first).to_be_visible(
                timeout=60_000)
            page.screenshot(path=str(out_dir / "browser-chat.png"), full_page=True)

            # Mute toggles, End call hangs up cleanly.
            page.get_by_role("button", name="Mute").click()
            expect(page.get_by_role("button", name="Unmute")).to_have_attribute("aria-pressed", "true")
            page.get_by_role("button", name="End call").click()
            expect(page.locator("#status")).to_contain_text("Call ended", timeout=15_000)
            expect(page.locator("#error")).to_be_hidden()
            expect(page.get_by_role("button", name="Start call")).to_be_enabled()
            page.screenshot(path=str(out_dir / "browser-ended.png"), full_page=True)

            # The page's figure reached the agent: it is in the session report, on its turn.
            report = wait_for(lambda: report_with_listener_figure(report_dir, started_wall - 1, heard_ms), 30)
            assert report, f"no session report since the call carries listener_latency_ms={heard_ms}"
            print(f"\nbrowser call: greeting after {greeted_s:.1f}s, 'Paris' after {answered_s:.1f}s; "
                  f"screenshot {shot}")
        finally:
            (out_dir / "logs").mkdir(exist_ok=True)
            (out_dir / "logs" / "browser-console.log").write_text("\n".join(console))
            browser.close()
