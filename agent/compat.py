"""Every use of a private livekit-agents internal, in one place.

livekit-agents 1.8 has no public hook for these; each is used through a function here
so a framework upgrade breaks one module, and `tests/test_compat.py` fails naming the
installed version and the missing internal (instead of a call failing mid-conversation).
Replace an entry with the public API as soon as the framework offers one.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from livekit.agents.worker import AgentServer, _DefaultLoadCalc

FRAMEWORK_VERSION = version("livekit-agents")
TESTED_WITH = "1.8.9"

__all__ = [
    "FRAMEWORK_VERSION", "TESTED_WITH", "default_cpu_load", "recount_load", "report_status_now",
    "plugin_http_session", "realtime_session_failed", "register_realtime_session", "set_transcript_attribute",
    "track_stream",
]


def default_cpu_load(server: AgentServer) -> float:
    """The framework's own CPU load figure (a 2.5 s moving average), which agent/load.py
    combines with call slots instead of measuring CPU a second time."""
    return _DefaultLoadCalc.get_load(server)


async def report_status_now(server: AgentServer) -> None:
    """Send LiveKit the worker's status now, counting the job being offered (the framework
    reserves its slot first), instead of at the next 2.5 s tick. Until then the server
    still sees a worker that this job fills as available and offers it the next job, which
    the worker refuses; the server then only tries the other workers attached to the same
    node, and with those full the job is never offered again (a call with no agent)."""
    await server._update_worker_status()


async def recount_load(server: AgentServer) -> None:
    """Recompute the load figure the framework reports (from our load_fnc) now that a job
    runs. The framework refreshes it every 0.5 s; a status sent between the job's start and
    that refresh would say "0 calls, available" for the next 2.5 s while the worker is full."""
    await server._refresh_worker_load()


def plugin_http_session(plugin: Any) -> Any:
    """The aiohttp session a livekit plugin (Deepgram STT) opens its streams with."""
    return plugin._ensure_session()


def track_stream(plugin: Any, stream: Any) -> None:
    """Register a stream we built ourselves so the plugin closes it with the others."""
    plugin._streams.add(stream)


def register_realtime_session(model: Any, session: Any) -> None:
    """A RealtimeModel closes the sessions it tracks; ours subclasses its session class."""
    model._sessions.add(session)


def realtime_session_failed(session: Any) -> bool:
    """Whether a realtime session's connection task ended for good (no server to sync with)."""
    return session._main_atask.done()


def set_transcript_attribute(session: Any, *, user: bool, key: str, value: str) -> bool:
    """Stamp the next `lk.transcription` segments the session publishes for the user (or the
    agent) with an extra attribute (interpreter mode: the segment's `language`). RoomIO
    builds its text streams' attributes from a dict it keeps; no option sets it per segment."""
    room_io = getattr(session, "_room_io", None)
    output = getattr(room_io, "_user_tr_output" if user else "_agent_tr_output", None)
    sinks = getattr(output, "_ParticipantTranscriptionOutput__outputs", None) or []
    stamped = False
    for sink in sinks:
        attrs = getattr(sink, "_additional_attributes", None)
        if isinstance(attrs, dict):
            attrs[key] = value
            stamped = True
    return stamped


# What tests/test_compat.py checks exists: (object, attribute) per internal above.
def internals() -> list[tuple[str, Any, str]]:
    from livekit.agents.voice.room_io import _output, room_io
    from livekit.plugins.deepgram import stt as deepgram_stt
    from livekit.plugins.openai import realtime

    return [
        ("worker._DefaultLoadCalc", _DefaultLoadCalc, "get_load"),
        ("worker.AgentServer", AgentServer, "_update_worker_status"),
        ("worker.AgentServer", AgentServer, "_refresh_worker_load"),
        ("plugins.deepgram.STT", deepgram_stt.STT, "_ensure_session"),
        ("plugins.deepgram.SpeechStream", deepgram_stt.SpeechStream, "_process_stream_event"),
        ("plugins.deepgram.SpeechStream", deepgram_stt.SpeechStream, "_run"),
        ("plugins.openai.realtime.RealtimeSession", realtime.RealtimeSession, "update_chat_ctx"),
        # set_transcript_attribute: the instance attributes are made in these classes' __init__
        # (on live objects, tests/test_interpreter_e2e.py checks the attribute arrives).
        ("voice.room_io.RoomIO", room_io.RoomIO, "_forward_user_transcript"),
        ("voice.room_io._ParticipantTranscriptionOutput", _output._ParticipantTranscriptionOutput, "capture_text"),
        ("voice.room_io._ParticipantStreamTranscriptionOutput", _output._ParticipantStreamTranscriptionOutput,
         "_create_text_writer"),
    ]
