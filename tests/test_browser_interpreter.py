"""The web app in interpreter mode, in a real headless Chromium against real processes
(livekit-server, parley-tokens), with no models: a plain `livekit.rtc` participant of kind
agent stands in for the worker. It carries `parley.interpreter` as the worker does (set
after it joins), answers the RPC `parley.set_language`, sends `lk.transcription` streams with
a `language` attribute and publishes `interpreter:<identity>` tracks; the page is checked
against that contract (README, "Interpreter mode"): the "I speak:" toggle, the choice as the
agent receives it (and the page's note when the agent refuses it), language badges, which
translation track plays, and nothing of it with a normal agent."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from livekit import api, rtc
from playwright.async_api import Browser, Page, async_playwright, expect

from harness.devstack import LiveKitServer, TokenService

from .test_browser_errors import CHROMIUM_ARGS, CHROMIUM_PATH, FAKE_MIC_ARGS, ensure_frontend

pytestmark = pytest.mark.e2e

PAIR = "en,es"
# No worker serves this name: the stand-in is the only agent in these rooms.
AGENT_NAME = "parley-interpreter-standin"


@pytest.fixture(scope="module")
def web(livekit_server: LiveKitServer, out_dir: Path):
    ensure_frontend()
    # Caps off: the rooms are created by the browser's join, and the several calls of this
    # module from one address never wait for LiveKit to close the previous ones.
    svc = TokenService(env={**livekit_server.env(), "PARLEY_TOKEN_API_KEY": "", "PARLEY_AGENT_NAME": AGENT_NAME,
                            "PARLEY_TOKEN_MAX_CALLS_PER_CLIENT": "0", "PARLEY_TOKEN_MAX_CALLS": "0",
                            "PARLEY_TOKEN_RATE_LIMIT": "0"})
    svc.start(out_dir / "logs", name="parley-tokens-interpreter")
    yield svc
    svc.stop()


@asynccontextmanager
async def browser_page(out_dir: Path, name: str) -> AsyncIterator[Page]:
    console: list[str] = []
    async with async_playwright() as p:
        browser: Browser = await p.chromium.launch(
            executable_path=CHROMIUM_PATH, headless=True,
            args=[*CHROMIUM_ARGS, *FAKE_MIC_ARGS, "--autoplay-policy=no-user-gesture-required"])
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            yield page
        finally:
            (out_dir / "logs").mkdir(exist_ok=True)
            (out_dir / "logs" / f"browser-interpreter-{name}-console.log").write_text("\n".join(console))
            await browser.close()


def token(server: LiveKitServer, room: str, identity: str, *, agent: bool) -> str:
    # May update its own attributes: the stand-in announces `parley.interpreter` as the worker does.
    at = (api.AccessToken(server.api_key, server.api_secret).with_identity(identity)
          .with_grants(api.VideoGrants(room_join=True, room=room, can_update_own_metadata=True)))
    if agent:
        at = at.with_kind("agent")  # how the page (and LiveKit Agents) tells the agent apart
    return at.to_jwt()


async def join(server: LiveKitServer, room: str, identity: str, *, agent: bool,
               pair: str | None = None, calls: list[tuple[str, str]] | None = None,
               refuse: Collection[str] = ()) -> rtc.Room:
    """A participant in `room`. An agent with `pair` answers `parley.set_language` (each call
    recorded in `calls` as (caller identity, payload); a code outside the pair or in `refuse` is
    answered with an RpcError), then announces the pair, as the worker does."""
    r = rtc.Room()
    await r.connect(server.url, token(server, room, identity, agent=agent))
    if pair is not None:
        codes = ("", *pair.split(","))

        def set_language(data: rtc.RpcInvocationData) -> str:
            if calls is not None:
                calls.append((data.caller_identity, data.payload))
            if data.payload not in codes or data.payload in refuse:
                raise rtc.RpcError(rtc.RpcError.ErrorCode.APPLICATION_ERROR,
                                   f"language {data.payload!r} is not supported here")
            return json.dumps({"language": data.payload})

        r.local_participant.register_rpc_method("parley.set_language", set_language)
        await r.local_participant.set_attributes({"parley.interpreter": pair})
    return r


async def start_call(page: Page) -> dict[str, Any]:
    """Press Start call; the token service's answer (room, identity) for the stand-in to join."""
    async with page.expect_response(lambda r: "/api/token" in r.url) as info:
        await page.get_by_role("button", name="Start call").click()
    response = await info.value
    assert response.ok, await response.text()
    return await response.json()


async def eventually(pred: Callable[[], Any], seconds: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if value := pred():
            return value
        await asyncio.sleep(0.1)
    return pred()


async def agent_received(page: Page, calls: list[tuple[str, str]], expected: list[tuple[str, str]]) -> None:
    """The stand-in's `parley.set_language` calls become `expected`; fails at once when the page
    says the choice did not reach the agent (its note under the toggle carries the reason)."""
    note = page.locator("#language-note")
    deadline = asyncio.get_running_loop().time() + 15
    while asyncio.get_running_loop().time() < deadline:
        if calls == expected:
            await expect(note).to_be_hidden()
            return
        if await note.is_visible() or len(calls) > len(expected):
            break
        await asyncio.sleep(0.1)
    shown = await note.inner_text() if await note.is_visible() else "(nothing)"
    pytest.fail(f"the agent received {calls!r}, not {expected!r}; the page says: {shown}")


async def transcript(agent: rtc.Room, text: str, segment: str, **attrs: str) -> None:
    await agent.local_participant.send_text(
        text, topic="lk.transcription",
        attributes={"lk.segment_id": segment, "lk.transcription_final": "true", **attrs})


PLAYING = "() => [...document.querySelectorAll('audio[data-track-name]')].map(a => a.dataset.trackName).sort()"


async def tracks_played(page: Page, expected: list[str]) -> list[str]:
    """The names of the tracks the page plays, once they are `expected` (or after 20 s)."""
    deadline = asyncio.get_running_loop().time() + 20
    got = await page.evaluate(PLAYING)
    while got != expected and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
        got = await page.evaluate(PLAYING)
    return got


async def page_mic_sid(agent: rtc.Room, identity: str) -> str:
    """The sid of the microphone track the page published, as the stand-in agent sees it."""
    browser_p = await eventually(lambda: agent.remote_participants.get(identity))
    assert browser_p, "the browser participant never reached the stand-in"
    mic_sid = await eventually(lambda: next(iter(browser_p.track_publications), None))
    assert mic_sid, "the browser published no microphone track"
    return mic_sid


async def connected(page: Page) -> None:
    await expect(page.locator("#status")).to_contain_text("Connected", timeout=30_000)
    await expect(page.get_by_role("button", name="End call")).to_be_enabled()


async def hang_up(page: Page, *rooms: rtc.Room) -> None:
    await page.get_by_role("button", name="End call").click()
    await expect(page.locator("#status")).to_contain_text("Call ended", timeout=15_000)
    await asyncio.gather(*(r.disconnect() for r in rooms))


async def with_cleanup(rooms: list[rtc.Room], body: Callable[[], Awaitable[None]]) -> None:
    try:
        await body()
    finally:
        await asyncio.gather(*(r.disconnect() for r in rooms if r.isconnected()), return_exceptions=True)


async def test_toggle_and_language_badges(web: TokenService, livekit_server: LiveKitServer, out_dir: Path) -> None:
    rooms: list[rtc.Room] = []

    async def body() -> None:
        async with browser_page(out_dir, "toggle") as page:
            await page.goto(f"{web.url}/?agentTimeout=30")
            toggle = page.get_by_role("group", name="I speak:")
            await expect(toggle).to_be_hidden()  # nothing known yet: the page looks as ever
            grant = await start_call(page)
            agent = await join(livekit_server, grant["room"], "agent-standin", agent=True, pair=PAIR)
            rooms.append(agent)
            await connected(page)

            # The toggle: one choice per language of the pair by its own name, plus Auto.
            await expect(toggle).to_be_visible(timeout=15_000)
            radios = toggle.get_by_role("radio")
            await expect(radios).to_have_count(3)
            labels = [await toggle.locator("label").nth(i).inner_text() for i in range(3)]
            assert labels == ["English", "Español", "Auto"], labels
            await expect(toggle.get_by_role("radio", name="Auto")).to_be_checked()
            await expect(toggle.get_by_role("radio", name="Español")).to_have_attribute("value", "es")
            # 44 px touch targets, like every other control.
            box = await toggle.locator("label").nth(1).bounding_box()
            assert box and box["height"] >= 44, box

            # Transcripts carry a badge with their language: the agent's translation (EN) and
            # the person's own words (ES, the stand-in names the browser's microphone track).
            mic_sid = await page_mic_sid(agent, grant["identity"])
            await transcript(agent, "¿Dónde está la estación?", "seg-user-1", language="es",
                             **{"lk.transcribed_track_id": mic_sid})
            await transcript(agent, "Where is the station?", "seg-agent-1", language="en")
            await transcript(agent, "No language here.", "seg-agent-2")
            user_line = page.locator("#transcript li.user", has_text="estación")
            agent_line = page.locator("#transcript li.agent", has_text="Where is the station?")
            await expect(user_line).to_have_attribute("data-language", "es", timeout=15_000)
            await expect(user_line.locator(".lang")).to_have_text("ES")
            await expect(user_line.locator(".text")).to_have_attribute("lang", "es")
            await expect(agent_line).to_have_attribute("data-language", "en")
            await expect(agent_line.locator(".lang")).to_have_text("EN")
            await expect(agent_line.locator(".lang")).to_have_attribute("title", "English")
            plain = page.locator("#transcript li.agent", has_text="No language here.")
            await expect(plain).to_be_visible()
            await expect(plain.locator(".lang")).to_have_count(0)
            assert await plain.get_attribute("data-language") is None
            await page.screenshot(path=str(out_dir / "browser-interpreter.png"), full_page=True)

            # The pair changes mid-call (another deployment's codes): the toggle follows;
            # an unknown code is shown as itself.
            await agent.local_participant.set_attributes({"parley.interpreter": "fr,xx"})
            await expect(toggle.locator("label")).to_have_text(["Français", "xx", "Auto"], timeout=15_000)
            await agent.local_participant.set_attributes({"parley.interpreter": PAIR})
            await expect(toggle.locator("label")).to_have_text(["English", "Español", "Auto"], timeout=15_000)

            await hang_up(page, agent)
            # Still there after the call (the next call's choice can be made before it starts),
            # also after a reload: the pair is remembered.
            await expect(toggle).to_be_visible()
            await page.reload()
            await expect(page.get_by_role("group", name="I speak:")).to_be_visible()
            await expect(page.locator("#error")).to_be_hidden()
            # It fits a 360 px phone like the rest of the page.
            await page.set_viewport_size({"width": 360, "height": 740})
            overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"page is {overflow}px wider than a 360px screen"
            for i in range(3):
                box = await toggle.locator("label").nth(i).bounding_box()
                assert box and box["height"] >= 44 and box["x"] >= 0 and box["x"] + box["width"] <= 360, box
            await page.screenshot(path=str(out_dir / "browser-interpreter-idle-mobile.png"), full_page=True)

    await with_cleanup(rooms, body)


async def test_language_choice_reaches_agent(web: TokenService, livekit_server: LiveKitServer,
                                            out_dir: Path) -> None:
    rooms: list[rtc.Room] = []

    async def body() -> None:
        async with browser_page(out_dir, "choice") as page:
            await page.goto(f"{web.url}/?agentTimeout=30")
            grant = await start_call(page)
            calls: list[tuple[str, str]] = []
            agent = await join(livekit_server, grant["room"], "agent-standin", agent=True, pair=PAIR, calls=calls)
            rooms.append(agent)
            await connected(page)
            toggle = page.get_by_role("group", name="I speak:")
            await expect(toggle).to_be_visible(timeout=15_000)
            identity = grant["identity"]
            await eventually(lambda: identity in agent.remote_participants)
            await asyncio.sleep(1)
            assert calls == [], "Auto (the default) is not sent"

            # During the call: the agent is told by RPC.
            await toggle.get_by_text("Español").click()
            await agent_received(page, calls, [(identity, "es")])
            await expect(toggle.get_by_role("radio", name="Español")).to_be_checked()
            stored = await page.evaluate("localStorage.getItem('parley.language')")
            assert stored == "es", stored

            # Auto: back to detection, sent as "".
            await toggle.get_by_text("Auto").click()
            await agent_received(page, calls, [(identity, "es"), (identity, "")])
            await expect(toggle.get_by_role("radio", name="Auto")).to_be_checked()
            await hang_up(page, agent)

            # Before the next call: chosen while idle, sent once the agent shows its pair.
            await toggle.get_by_text("English").click()
            await page.reload()  # and remembered across a reload
            toggle = page.get_by_role("group", name="I speak:")
            await expect(toggle.get_by_role("radio", name="English")).to_be_checked()
            grant = await start_call(page)
            calls = []
            agent = await join(livekit_server, grant["room"], "agent-standin-2", agent=True, pair=PAIR, calls=calls)
            rooms.append(agent)
            await connected(page)
            await agent_received(page, calls, [(grant["identity"], "en")])
            await expect(toggle.get_by_role("radio", name="English")).to_be_checked()
            await hang_up(page, agent)

    await with_cleanup(rooms, body)


async def test_language_refused_by_agent(web: TokenService, livekit_server: LiveKitServer, out_dir: Path) -> None:
    rooms: list[rtc.Room] = []

    async def body() -> None:
        async with browser_page(out_dir, "refused") as page:
            await page.goto(f"{web.url}/?agentTimeout=30")
            grant = await start_call(page)
            identity = grant["identity"]
            calls: list[tuple[str, str]] = []
            agent = await join(livekit_server, grant["room"], "agent-standin", agent=True, pair=PAIR,
                               calls=calls, refuse={"es"})
            rooms.append(agent)
            await connected(page)
            toggle = page.get_by_role("group", name="I speak:")
            await expect(toggle).to_be_visible(timeout=15_000)

            # The agent answers with an RpcError: the radio goes back to what it uses (Auto) and
            # one line under the toggle says why, with the agent's own message.
            await toggle.get_by_text("Español").click()
            note = page.locator("#language-note")
            await expect(note).to_be_visible(timeout=20_000)
            await expect(note).to_contain_text("did not reach the agent")
            await expect(note).to_contain_text("language 'es' is not supported here")
            assert "\n" not in await note.inner_text()
            await expect(toggle.get_by_role("radio", name="Auto")).to_be_checked()
            assert calls == [(identity, "es")], calls
            await expect(page.locator("#error")).to_be_hidden()
            await page.screenshot(path=str(out_dir / "browser-interpreter-refused.png"), full_page=True)

            # Another choice goes through and clears the note.
            await toggle.get_by_text("English").click()
            await agent_received(page, calls, [(identity, "es"), (identity, "en")])
            await expect(toggle.get_by_role("radio", name="English")).to_be_checked()
            await hang_up(page, agent)

    await with_cleanup(rooms, body)


async def test_own_translation_plays_only_when_alone(web: TokenService, livekit_server: LiveKitServer,
                                                    out_dir: Path) -> None:
    rooms: list[rtc.Room] = []

    async def body() -> None:
        async with browser_page(out_dir, "audio") as page:
            await page.goto(f"{web.url}/?agentTimeout=30")
            grant = await start_call(page)
            me, other = grant["identity"], "other-speaker"
            agent = await join(livekit_server, grant["room"], "agent-standin", agent=True, pair=PAIR)
            rooms.append(agent)
            # One track per speaker it translates, as the worker publishes them.
            sources = [rtc.AudioSource(48000, 1) for _ in range(2)]
            for name, source in zip((f"interpreter:{me}", f"interpreter:{other}"), sources, strict=True):
                await agent.local_participant.publish_track(
                    rtc.LocalAudioTrack.create_audio_track(name, source),
                    rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
            await connected(page)

            # Alone with the agent: both play, the person hears their own words translated back.
            both = sorted([f"interpreter:{me}", f"interpreter:{other}"])
            assert await tracks_played(page, both) == both
            # Someone else joins: our translation is theirs to hear, not ours.
            person = await join(livekit_server, grant["room"], other, agent=False)
            rooms.append(person)
            assert await tracks_played(page, [f"interpreter:{other}"]) == [f"interpreter:{other}"]
            # They leave: alone again, our translation plays again.
            await person.disconnect()
            assert await tracks_played(page, both) == both
            await expect(page.locator("#error")).to_be_hidden()
            await hang_up(page, agent)

    await with_cleanup(rooms, body)


async def test_two_people_lines_name_who_spoke(web: TokenService, livekit_server: LiveKitServer,
                                              out_dir: Path) -> None:
    """With another person in the room, their words and the interpreter's translation of them
    are labelled with that person, not as the agent's; the page's own words stay "You"."""
    rooms: list[rtc.Room] = []

    async def body() -> None:
        async with browser_page(out_dir, "people") as page:
            await page.goto(f"{web.url}/?agentTimeout=30")
            grant = await start_call(page)
            agent = await join(livekit_server, grant["room"], "agent-standin", agent=True, pair=PAIR)
            rooms.append(agent)
            translation = rtc.LocalAudioTrack.create_audio_track("interpreter:ana", rtc.AudioSource(48000, 1))
            await agent.local_participant.publish_track(
                translation, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
            await connected(page)
            person = await join(livekit_server, grant["room"], "ana", agent=False)
            rooms.append(person)
            mic = rtc.LocalAudioTrack.create_audio_track("ana-mic", rtc.AudioSource(48000, 1))
            ana_mic = await person.local_participant.publish_track(
                mic, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
            # The page knows both tracks once it plays them (the person's own voice, their translation).
            want = sorted(["ana-mic", "interpreter:ana"])
            assert await tracks_played(page, want) == want
            own_sid = await page_mic_sid(agent, grant["identity"])

            await transcript(agent, "Where is the station?", "seg-mine", language="en",
                             **{"lk.transcribed_track_id": own_sid})
            await transcript(agent, "¿Dónde está el tren?", "seg-ana", language="es",
                             **{"lk.transcribed_track_id": ana_mic.sid})
            await transcript(agent, "Where is the train?", "seg-ana-en", language="en",
                             **{"lk.transcribed_track_id": translation.sid})
            await transcript(agent, "Hello from the agent.", "seg-agent")
            mine = page.locator("#transcript li.user", has_text="Where is the station?")
            theirs = page.locator("#transcript li.other", has_text="¿Dónde está el tren?")
            translated = page.locator("#transcript li.agent", has_text="Where is the train?")
            reply = page.locator("#transcript li.agent", has_text="Hello from the agent.")
            # Each line's label, then its language badge.
            await expect(mine.locator(".who")).to_have_text("YouEN", timeout=15_000)
            await expect(theirs.locator(".who")).to_have_text("anaES")
            await expect(translated.locator(".who")).to_have_text("ana, translatedEN")
            await expect(reply.locator(".who")).to_have_text("Agent")
            await page.screenshot(path=str(out_dir / "browser-interpreter-people.png"), full_page=True)
            await hang_up(page, agent, person)

    await with_cleanup(rooms, body)


async def test_normal_agent_page_unchanged(web: TokenService, livekit_server: LiveKitServer, out_dir: Path) -> None:
    rooms: list[rtc.Room] = []

    async def body() -> None:
        async with browser_page(out_dir, "normal") as page:
            # The last call was with an interpreter: its toggle is shown before this call.
            await page.goto(web.url)
            await page.evaluate("localStorage.setItem('parley.interpreter', 'en,es');"
                                "localStorage.setItem('parley.language', 'es')")
            await page.goto(f"{web.url}/?agentTimeout=30")
            toggle = page.get_by_role("group", name="I speak:")
            await expect(toggle).to_be_visible()
            grant = await start_call(page)
            agent = await join(livekit_server, grant["room"], f"agent-{secrets.token_hex(3)}", agent=True)
            rooms.append(agent)
            await connected(page)
            # A normal agent: no toggle, no badge, and the page forgets the interpreter.
            await expect(toggle).to_be_hidden()
            await transcript(agent, "Hello! How can I help?", "seg-1")
            line = page.locator("#transcript li.agent", has_text="How can I help?")
            await expect(line).to_be_visible(timeout=15_000)
            await expect(page.locator("#transcript .lang")).to_have_count(0)
            await expect(page.locator("#transcript [data-language]")).to_have_count(0)
            await expect(line.locator(".who")).to_have_text("Agent")
            assert await page.evaluate("localStorage.getItem('parley.interpreter')") is None
            await expect(page.locator("#error")).to_be_hidden()
            await hang_up(page, agent)
            await page.reload()
            await expect(page.get_by_role("group", name="I speak:")).to_be_hidden()

    await with_cleanup(rooms, body)
