"""A token from the real `parley-tokens` joins the real livekit-server and brings the
agent in; the server enforces the token's narrow grants."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest
from livekit import api, rtc
from livekit.protocol import models

from agent.settings import Settings
from harness.devstack import LiveKitServer, TokenService, Worker

from .test_browser import wait_worker_idle

pytestmark = pytest.mark.e2e

API_KEY = "livekit-join-test-key"


@pytest.fixture(scope="module")
def tokens(livekit_server: LiveKitServer, out_dir: Path):
    svc = TokenService(env={**livekit_server.env(), "PARLEY_TOKEN_API_KEY": API_KEY,
                            "PARLEY_AGENT_NAME": Settings.load().agent_name})
    svc.start(out_dir / "logs", name="parley-tokens-livekit")
    yield svc
    svc.stop()


def mint(svc: TokenService, **body: str) -> dict[str, str]:
    req = urllib.request.Request(f"{svc.url}/api/token", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


async def test_minted_token_joins_and_dispatches_agent(tokens: TokenService, worker: Worker,
                                                      livekit_server: LiveKitServer) -> None:
    await asyncio.to_thread(wait_worker_idle, worker)
    grant = mint(tokens, name="Join Test")
    room = rtc.Room()
    agent_joined = asyncio.Event()
    agent_audio = asyncio.Event()
    greeting: list[str] = []

    def on_participant(p: rtc.RemoteParticipant) -> None:
        if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            agent_joined.set()

    def on_track(track: rtc.Track, _pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT and track.kind == rtc.TrackKind.KIND_AUDIO:
            agent_audio.set()

    def on_text(reader: rtc.TextStreamReader, sender: str) -> None:
        async def read() -> None:
            greeting.append(await reader.read_all())
        asyncio.ensure_future(read())

    room.on("participant_connected", on_participant)
    room.on("track_subscribed", on_track)
    room.register_text_stream_handler("lk.transcription", on_text)
    try:
        await room.connect(grant["server_url"], grant["token"])
        assert room.name == grant["room"]
        assert room.local_participant.identity == grant["identity"]
        # The room was created by this join, with the agent dispatch from the token.
        for p in room.remote_participants.values():
            on_participant(p)
        mic = rtc.AudioSource(48000, 1)
        await room.local_participant.publish_track(
            rtc.LocalAudioTrack.create_audio_track("mic", mic),
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        await asyncio.wait_for(agent_joined.wait(), 60)
        await asyncio.wait_for(agent_audio.wait(), 60)
        for _ in range(300):
            if any("Parley" in g for g in greeting):
                break
            await asyncio.sleep(0.1)
        assert any("Parley" in g for g in greeting), greeting

        # Grants are enforced by the server: no camera for a browser caller (livekit-server
        # ignores the request, so the client times out), and only the microphone is listed.
        camera = rtc.LocalVideoTrack.create_video_track("cam", rtc.VideoSource(64, 64))
        with pytest.raises(Exception, match=r"(?i)timed out|permission|not allowed"):
            await asyncio.wait_for(room.local_participant.publish_track(
                camera, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)), 20)
        async with api.LiveKitAPI(livekit_server.url.replace("ws://", "http://"), livekit_server.api_key,
                                  livekit_server.api_secret) as lk:
            people = await lk.room.list_participants(api.ListParticipantsRequest(room=grant["room"]))
        me = next(p for p in people.participants if p.identity == grant["identity"])
        assert [t.source for t in me.tracks] == [models.TrackSource.MICROPHONE]
        assert me.name == "Join Test"
        assert any(p.kind == models.ParticipantInfo.Kind.AGENT for p in people.participants)
        # Chat (data) is allowed.
        await room.local_participant.send_text("hello", topic="lk.chat")
    finally:
        await room.disconnect()


async def test_token_signed_with_another_secret_is_refused(livekit_server: LiveKitServer,
                                                           out_dir: Path) -> None:
    # No call caps: with them, the rogue could not even open the room (LiveKit refuses its
    # API calls too); here the token itself must be what the server refuses.
    rogue = TokenService(env={**livekit_server.env(), "LIVEKIT_API_SECRET": "not-the-server-secret-" * 2,
                              "PARLEY_TOKEN_API_KEY": API_KEY, "PARLEY_TOKEN_MAX_CALLS_PER_CLIENT": "0",
                              "PARLEY_TOKEN_MAX_CALLS": "0", "PARLEY_TOKEN_METRICS_PORT": "0"})
    rogue.start(out_dir / "logs", name="parley-tokens-rogue")
    try:
        grant = mint(rogue)
    finally:
        rogue.stop()
    room = rtc.Room()
    with pytest.raises(rtc.ConnectError):
        await asyncio.wait_for(room.connect(grant["server_url"], grant["token"]), 20)
