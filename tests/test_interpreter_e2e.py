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

from .conftest import wait_report

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
    es, en = work / "es.wav", work / "en.wav"
    subprocess.run(["espeak-ng", "-v", "es", "-s", "150", "-w", str(es), "La playa está muy cerca del hotel."],
                   check=True, timeout=30)
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(en), "I like coffee with milk."],
                   check=True, timeout=30)
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
