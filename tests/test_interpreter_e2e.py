"""Interpreter mode through the whole stack: a worker with PARLEY_INTERPRETER=1, a caller
(parley-call, unchanged) speaking one Spanish and one English sentence, and an observer in
the same room reading the `lk.transcription` streams with their `language` attribute.

The two sentences are ones the offline models handle (scripts/bench_interpreter.py measures
how many do: Whisper base mishears much of espeak-ng's Spanish); this test checks that both
directions, the language attributes and the report work, not the translation quality."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import api, rtc

from harness.devstack import BIN, ROOT, LiveKitServer, Worker

from .conftest import records, wait_report

pytestmark = pytest.mark.e2e

AGENT = "parley-interpreter"


def fold(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))


@pytest.fixture(scope="module")
def interpreter_reports(out_dir: Path) -> Path:
    d = out_dir / "interpreter-reports"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture(scope="module")
def interpreter_worker(livekit_server: LiveKitServer, out_dir: Path, interpreter_reports: Path) -> Iterator[Worker]:
    w = Worker(env={**livekit_server.env(), "PARLEY_AGENT_NAME": AGENT, "PARLEY_INTERPRETER": "1",
                    "PARLEY_INTERPRETER_LANGUAGES": "en,es", "PARLEY_REPORT_DIR": str(interpreter_reports),
                    "PARLEY_IDLE_PROCESSES": "1", "PARLEY_LOAD_CPU": "0"})
    w.start(out_dir / "logs", name="interpreter-worker", timeout=300)
    yield w
    w.stop()


class Observer:
    """A second participant that records every lk.transcription segment it receives."""

    def __init__(self, server: LiveKitServer, room: str) -> None:
        self.server, self.room_name = server, room
        self.segments: list[dict] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> Observer:
        self._thread.start()
        assert self._ready.wait(30), "observer could not join"
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    async def _run(self) -> None:
        token = (api.AccessToken(self.server.api_key, self.server.api_secret).with_identity("observer")
                 .with_grants(api.VideoGrants(room_join=True, room=self.room_name, can_publish=False)).to_jwt())
        room = rtc.Room()

        def on_text(reader: rtc.TextStreamReader, sender: str) -> None:
            async def read() -> None:
                text = await reader.read_all()
                self.segments.append({"sender": sender, "text": text, "attributes": dict(reader.info.attributes)})
            asyncio.ensure_future(read())

        room.register_text_stream_handler("lk.transcription", on_text)
        await room.connect(self.server.url, token)
        self._ready.set()
        await asyncio.to_thread(self._stop.wait)
        await room.disconnect()


def sentences(work: Path, prefix: str) -> tuple[Path, Path]:
    """One Spanish and one English sentence the offline models handle, spoken by espeak-ng."""
    es, en = work / f"{prefix}es.wav", work / f"{prefix}en.wav"
    for voice, path, text in (("es", es, "La playa está muy cerca del hotel."),
                              ("en-us", en, "I like coffee with milk.")):
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(path), text], check=True, timeout=30)
    return es, en


def _participants(server: LiveKitServer, room: str) -> int:
    async def go() -> int:
        lk = api.LiveKitAPI(server.url.replace("ws://", "http://"), server.api_key, server.api_secret)
        try:
            return len((await lk.room.list_participants(api.ListParticipantsRequest(room=room))).participants)
        except api.TwirpError:
            return 0
        finally:
            await lk.aclose()

    return asyncio.run(go())


def test_interpreter_translates_both_ways(livekit_server: LiveKitServer, interpreter_worker: Worker,
                                          interpreter_reports: Path, out_dir: Path) -> None:
    work = out_dir / "interpreter"
    work.mkdir(exist_ok=True)
    es, en = sentences(work, "")
    room = f"interp-{int(time.time())}"
    cmd = [str(BIN / "parley-call"), "--url", livekit_server.url, "--api-key", livekit_server.api_key,
           "--api-secret", livekit_server.api_secret, "--agent", AGENT, "--room", room, "--json",
           "--timeout", "30", "--audio", str(es), "--audio", str(en)]
    call = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 60
    while _participants(livekit_server, room) < 2 and time.monotonic() < deadline and call.poll() is None:
        time.sleep(0.2)
    observer = Observer(livekit_server, room).start()
    try:
        stdout, stderr = call.communicate(timeout=240)
    finally:
        observer.stop()
    assert call.returncode == 0, stderr
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    turns = [e for e in events if e["event"] == "turn"]
    assert len(turns) == 2, events
    to_en, to_es = fold(turns[0]["agent_text"]), fold(turns[1]["agent_text"])
    assert "beach" in to_en and "hotel" in to_en, turns[0]
    assert "cafe" in to_es and "leche" in to_es, turns[1]
    assert all(t["turn_latency_ms"] is not None for t in turns), turns
    print(f"interpreter: es->en {turns[0]['agent_text']!r} in {turns[0]['turn_latency_ms']} ms; "
          f"en->es {turns[1]['agent_text']!r} in {turns[1]['turn_latency_ms']} ms")

    # Both texts on lk.transcription, each stamped with its language.
    finals = [s for s in observer.segments if s["attributes"].get("lk.transcription_final") == "true"]
    langs = {(s["attributes"].get("language"), fold(s["text"])) for s in finals}
    assert any(lang == "es" and "playa" in text for lang, text in langs), observer.segments  # caller, original
    assert any(lang == "en" and "beach" in text for lang, text in langs), observer.segments  # agent, translation
    assert any(lang == "es" and "leche" in text for lang, text in langs), observer.segments

    # ... and in the session report, each message with its language.
    report = wait_report(interpreter_reports, room, timeout=60)
    msgs = [i for i in report["chat_history"]["items"] if i.get("type") == "message"]
    users = [m for m in msgs if m["role"] == "user"]
    assert [m["extra"].get("language") for m in users] == ["es", "en"], users
    assert "beach" in fold(users[0]["extra"]["translation"]), users[0]
    agents = [m for m in msgs if m["role"] == "assistant" and m["extra"].get("original")]
    assert [m["extra"]["language"] for m in agents] == ["en", "es"], agents


class Speaker:
    """A person in the room (livekit rtc): says which language they speak, publishes a
    microphone, plays a WAV into it on demand, and records what reaches them: each agent
    track's audio level by track name, and every final lk.transcription segment."""

    def __init__(self, identity: str, language: str) -> None:
        self.identity, self.language = identity, language
        self.room = rtc.Room()
        self.source = rtc.AudioSource(16000, 1)
        self.finals: list[tuple[str, str, str]] = []  # (sender, language, text)
        self.loud: dict[str, float] = {}  # agent track name -> first time its audio was loud
        self.agent_tracks: set[str] = set()
        self._tasks: set[asyncio.Task] = set()

    async def join(self, server: LiveKitServer, room: str) -> None:
        token = api.AccessToken(server.api_key, server.api_secret).with_identity(self.identity)
        if self.language:  # said at mint time; otherwise by RPC (`tell_language`)
            token = token.with_attributes({"parley.language": self.language})
        token = token.with_grants(api.VideoGrants(room_join=True, room=room)).to_jwt()

        def on_text(reader: rtc.TextStreamReader, sender: str) -> None:
            async def read() -> None:
                text = await reader.read_all()
                attrs = dict(reader.info.attributes)
                if attrs.get("lk.transcription_final") == "true":
                    self.finals.append((sender, attrs.get("language", ""), fold(text)))
            self._spawn(read())

        def on_track(track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
            if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT and track.kind == rtc.TrackKind.KIND_AUDIO:
                self._spawn(self._listen(pub.name, rtc.AudioStream(track, sample_rate=16000, num_channels=1)))

        def on_published(pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
            if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
                self.agent_tracks.add(pub.name)

        self.room.register_text_stream_handler("lk.transcription", on_text)
        self.room.on("track_subscribed", on_track)
        self.room.on("track_published", on_published)
        await self.room.connect(server.url, token)
        for p in self.room.remote_participants.values():
            for pub in p.track_publications.values():
                on_published(pub, p)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self.source)
        await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        self._queue: asyncio.Queue = asyncio.Queue()
        self._spawn(self._silence())

    async def _silence(self) -> None:
        # The only caller of capture_frame (the source takes one frame at a time): what `say`
        # queued, else silence, so the microphone never goes quiet in between.
        silence = rtc.AudioFrame(b"\0\0" * 320, 16000, 1, 320)
        while True:
            item = self._queue.get_nowait() if not self._queue.empty() else silence
            if isinstance(item, asyncio.Future):
                item.set_result(time.monotonic())
                continue
            await self.source.capture_frame(item)

    async def say(self, wav: Path) -> float:
        """Play `wav` (16-bit mono) in real time; returns when it ended (monotonic)."""
        import wave

        import numpy as np
        with wave.open(str(wav), "rb") as w:
            rate, pcm = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        if rate != 16000:
            pcm = np.interp(np.arange(0, len(pcm), rate / 16000), np.arange(len(pcm)), pcm).astype(np.int16)
        for i in range(0, len(pcm) - 320, 320):
            self._queue.put_nowait(rtc.AudioFrame(pcm[i:i + 320].tobytes(), 16000, 1, 320))
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(done)
        return await done

    async def tell_language(self, code: str) -> str:
        """The web app's way: the `parley.set_language` RPC to the agent."""
        agent = next(p for p in self.room.remote_participants.values()
                     if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)
        return await self.room.local_participant.perform_rpc(
            destination_identity=agent.identity, method="parley.set_language", payload=code)

    async def _listen(self, name: str, stream: rtc.AudioStream) -> None:
        import numpy as np
        async for ev in stream:
            pcm = np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.float32)
            if pcm.size and float(np.sqrt(np.mean(pcm ** 2))) > 500:
                self.loud.setdefault(name, time.monotonic())
                self.loud[name + "#last"] = time.monotonic()

    def heard(self, language: str, *words: str) -> bool:
        return any(lang == language and all(w in text for w in words) for _, lang, text in self.finals)

    def _spawn(self, coro) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def leave(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await self.room.disconnect()


async def _until(cond, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def test_interpreter_two_people_each_hear_the_other(livekit_server: LiveKitServer, interpreter_worker: Worker,
                                                    interpreter_reports: Path, out_dir: Path) -> None:
    """A Spanish speaker and an English speaker in one room (each says which language they speak:
    ana in her token's attributes, bob by the web app toggle's RPC): each one's words are translated on the agent's track named
    for them, which the other hears; both are transcribed with their languages; the report has
    the second speaker's messages; the call ends when both have left."""
    work = out_dir / "interpreter"
    work.mkdir(exist_ok=True)
    es, en = sentences(work, "two-")
    room = f"interp-two-{int(time.time())}"

    async def scenario() -> None:
        ana, bob = Speaker("ana", "es"), Speaker("bob", "")  # rtc.Room needs the running loop
        lk = api.LiveKitAPI(livekit_server.url.replace("ws://", "http://"), livekit_server.api_key,
                            livekit_server.api_secret)
        try:
            await lk.room.create_room(api.CreateRoomRequest(name=room))
            await lk.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name=AGENT, room=room))
        finally:
            await lk.aclose()
        try:
            await ana.join(livekit_server, room)
            await _until(lambda: "interpreter:ana" in ana.agent_tracks, 90, "the agent's track for ana")
            await bob.join(livekit_server, room)
            await _until(lambda: "interpreter:bob" in bob.agent_tracks and "interpreter:ana" in bob.agent_tracks,
                         30, "the agent's track for bob")
            # bob says which language he speaks as the web app does; a code outside the pair is refused
            assert json.loads(await bob.tell_language("en")) == {"language": "en"}
            with pytest.raises(rtc.RpcError, match="not one of this call's"):
                await bob.tell_language("fr")
            await asyncio.sleep(4.0)  # both "ready" announcements played
            ended = await ana.say(es)
            await _until(lambda: bob.heard("en", "beach"), 60, f"bob reading ana's words in English: {bob.finals}")
            await _until(lambda: bob.loud.get("interpreter:ana#last", 0) > ended, 30, "ana's translation heard by bob")
            ended = await bob.say(en)
            await _until(lambda: ana.heard("es", "leche"), 60, f"ana reading bob's words in Spanish: {ana.finals}")
            await _until(lambda: ana.loud.get("interpreter:bob#last", 0) > ended, 30, "bob's translation heard by ana")
            assert ana.heard("es", "playa") and bob.heard("en", "coffee"), (ana.finals, bob.finals)
        finally:
            await ana.leave()
            await bob.leave()

    asyncio.run(scenario())
    report = wait_report(interpreter_reports, room, timeout=90)
    speakers = report["interpreter"]["speakers"]
    assert report["interpreter"]["languages"] == ["en", "es"]
    users = [m for m in speakers["bob"] if m["role"] == "user"]
    assert users and users[0]["language"] == "en" and "leche" in fold(users[0]["translation"]), speakers
    first = [i for i in report["chat_history"]["items"] if i.get("type") == "message" and i["role"] == "user"]
    assert first and first[0]["extra"]["language"] == "es" and "beach" in fold(first[0]["extra"]["translation"])


def test_web_app_language_toggle_reaches_the_interpreter(livekit_server: LiveKitServer, interpreter_worker: Worker,
                                                         out_dir: Path, tmp_path: Path) -> None:
    """The web app against the real interpreter worker (tests/test_browser_interpreter.py uses a
    stand-in): the toggle appears, "Español" reaches the agent by RPC (detection is then skipped),
    and the Spanish spoken into the page comes back as an English line with its badge, on the
    agent track named for this page's participant."""
    from playwright.sync_api import expect, sync_playwright

    from harness.devstack import TokenService

    from .test_browser import padded_wav
    from .test_browser_errors import CHROMIUM_ARGS, CHROMIUM_PATH, ensure_frontend

    ensure_frontend()
    es, _ = sentences(tmp_path, "web-")
    wav = padded_wav(es, tmp_path / "mic.wav", 9.0, 2.0)  # after both "ready" messages
    svc = TokenService(env={**livekit_server.env(), "PARLEY_TOKEN_API_KEY": "", "PARLEY_AGENT_NAME": AGENT})
    svc.start(out_dir / "logs", name="parley-tokens-interpreter-web")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM_PATH, headless=True, args=[
                *CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}%noloop", "--autoplay-policy=no-user-gesture-required"])
            try:
                page = browser.new_page()
                page.goto(svc.url)
                page.get_by_role("button", name="Start call").click()
                spanish = page.get_by_label("Español")
                spanish.wait_for(timeout=90_000)  # shown once the agent announces its pair
                spanish.check()
                english = page.locator('#transcript li.agent[data-language="en"] .text').filter(has_text="beach")
                expect(english.first).to_be_visible(timeout=90_000)
                mine = page.locator('#transcript li.user[data-language="es"] .text').filter(has_text="playa")
                expect(mine.first).to_be_visible()
                tracks = page.locator("audio").evaluate_all("els => els.map(e => e.dataset.trackName || '')")
                assert any(t.startswith("interpreter:web") for t in tracks), tracks  # alone: own translation plays
                page.screenshot(path=str(out_dir / "browser-interpreter-real.png"), full_page=True)
                page.get_by_role("button", name="End call").click()
            finally:
                browser.close()
    finally:
        svc.stop()
    said = [r for r in records(interpreter_worker) if r["message"].endswith("speaks es")]
    assert said, "the page's choice did not reach the agent"
