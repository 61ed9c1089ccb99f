"""The Parley worker: registers with LiveKit, is dispatched by agent name, runs one
AgentSession per call. Started by `python -m agent start|dev` (see __main__.py)."""

from __future__ import annotations

import logging

from livekit import rtc
from livekit.agents import AgentServer, AgentSession, JobContext, JobProcess, llm, room_io

from .assistant import ParleyAgent
from .load import LoadOptions, WorkerLoad
from .providers import LocalModels, SessionModels, build_turn_detector, select_models
from .providers.realtime import fail_over_to_local
from .report import TurnTracker, write_report
from .settings import Settings
from .telephony import PhoneLine

logger = logging.getLogger("parley.worker")

# Spoken by the local pipeline when it takes a call over from a failed realtime model.
REALTIME_LOST = "Sorry, I lost my connection for a moment. Could you say that again?"

settings = Settings.load()
settings.check_providers()  # a cloud provider without its key: refuse to start, not fail mid-call


def prewarm(proc: JobProcess) -> None:
    """Runs once per job process, before any call is assigned to it."""
    proc.userdata["models"] = LocalModels.load(settings)


server = AgentServer(
    setup_fnc=prewarm,
    ws_url=settings.livekit_url,
    api_key=settings.livekit_api_key,
    api_secret=settings.livekit_api_secret,
    port=settings.health_port,
    drain_timeout=settings.drain_timeout,
    load_threshold=settings.load_threshold,
    load_fnc=WorkerLoad(LoadOptions.from_settings(settings)),
    num_idle_processes=settings.idle_processes,
    # Loading Whisper + llama.cpp + Piper takes a few seconds on 2 cores, more under load.
    initialize_process_timeout=120.0,
    job_memory_warn_mb=1500,
)


def build_session(models: LocalModels, chosen: SessionModels | None = None) -> AgentSession:
    chosen = chosen or select_models(settings, models)
    if chosen.realtime:
        # The realtime model hears, thinks and speaks; the server detects turns. Local VAD
        # stays on so a caller's barge-in cuts the agent off at once; Piper speaks fixed phrases.
        return AgentSession(
            vad=models.vad,
            llm=chosen.llm,
            tts=chosen.tts,
            turn_handling={
                "turn_detection": "realtime_llm",
                "interruption": {"mode": "vad", "min_duration": settings.interrupt_min_duration},
            },
        )
    return AgentSession(
        vad=models.vad,
        stt=chosen.stt,
        llm=chosen.llm,
        tts=chosen.tts,
        turn_handling={
            "turn_detection": build_turn_detector(),
            "endpointing": {
                "min_delay": settings.endpointing_min_delay,
                "max_delay": settings.endpointing_max_delay,
            },
            # "adaptive" interruption needs LiveKit's cloud; VAD barge-in works offline.
            "interruption": {
                "mode": "vad",
                "min_duration": settings.interrupt_min_duration,
                "false_interruption_timeout": 1.5,
            },
            # LLM and TTS start on the final transcript, before the turn is confirmed.
            "preemptive_generation": {"enabled": True, "preemptive_tts": True},
        },
    )


async def on_session_end(ctx: JobContext) -> None:
    """Runs when the call ends for any reason (hang-up included): write the report."""
    tracker: TurnTracker | None = ctx.proc.userdata.pop(("tracker", ctx.job.id), None)
    try:
        report = ctx.make_session_report().to_dict()
    except RuntimeError as e:  # no session was started (caller never joined)
        logger.info("no session report room=%s: %s", ctx.job.room.name, e)
        return
    if phone := ctx.proc.userdata.pop(("phone", ctx.job.id), None):
        report["phone"] = phone.summary()
    if chosen := ctx.proc.userdata.pop(("providers", ctx.job.id), None):
        # report["usage"] (framework) has per provider/model audio seconds, tokens, characters.
        report["providers"] = {**chosen.providers, "fallbacks": chosen.fallbacks.events}
    path = write_report(settings.report_dir, ctx.job.room.name, report, tracker.turns if tracker else [])
    logger.info("session report room=%s turns=%d path=%s", ctx.job.room.name,
                len(tracker.turns) if tracker else 0, path)


@server.rtc_session(agent_name=settings.agent_name, on_session_end=on_session_end)
async def entrypoint(ctx: JobContext) -> None:
    room = ctx.job.room.name
    logger.info("call dispatched room=%s job=%s", room, ctx.job.id)
    await ctx.connect()
    participant = await ctx.wait_for_participant()
    logger.info("caller joined room=%s participant=%s kind=%s", room, participant.identity,
                rtc.ParticipantKind.Name(participant.kind))
    # A phone caller (LiveKit SIP): outbound calls wait here until the callee answers.
    line = PhoneLine.for_participant(ctx, participant, settings)
    if line is not None and not await line.answered():
        return

    models = ctx.proc.userdata["models"]
    chosen = select_models(settings, models)
    ctx.proc.userdata[("providers", ctx.job.id)] = chosen
    ctx.add_shutdown_callback(chosen.aclose)  # this call's cloud clients; local models stay loaded
    logger.info("providers room=%s %s", room, " ".join(f"{k}={v}" for k, v in chosen.providers.items()))
    session = build_session(models, chosen)
    if chosen.realtime and settings.fallback:
        def local_takeover(chat_ctx: llm.ChatContext) -> ParleyAgent:
            # Apologise only if the caller had said something the failed model may have lost.
            asked = any(i.type == "message" and i.role == "user" for i in chat_ctx.items)
            return ParleyAgent(settings, greeting=REALTIME_LOST if asked else "", chat_ctx=chat_ctx, tools=[],
                               stt=models.stt, llm=models.llm, tts=models.tts,
                               turn_handling={"turn_detection": build_turn_detector()})

        fail_over_to_local(session, local_takeover)
    tracker = TurnTracker(room=room, participant=participant.identity)
    tracker.attach(session)
    if line is not None:
        line.attach(session)
    ctx.proc.userdata[("tracker", ctx.job.id)] = tracker

    @session.on("close")
    def _on_close(ev) -> None:  # type: ignore[no-untyped-def]
        logger.info("call closed room=%s participant=%s reason=%s", room, participant.identity,
                    getattr(ev, "reason", "?"))

    await session.start(
        agent=line.agent() if line is not None else ParleyAgent(settings),
        room=ctx.room,
        room_options=room_io.RoomOptions(
            participant_identity=participant.identity,
            audio_input=room_io.AudioInputOptions(sample_rate=16000, frame_size_ms=20),
            # A call is one caller and one agent: when the session ends (hang-up, end_call),
            # the room goes too, so the job ends now instead of after the empty-room timeout.
            delete_room_on_close=True,
        ),
        record=False,
    )
