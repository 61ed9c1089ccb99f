"""The Parley worker: registers with LiveKit, is dispatched by agent name, runs one
AgentSession per call. Started by `python -m agent start|dev` (see __main__.py).

Per call: a `Call` (agent/callstate.py) holds the chosen providers, the turn tracker and
the phone line, is the session's userdata, ends the call and writes its report; the
session itself is assembled in agent/session.py.
"""

from __future__ import annotations

import logging

from livekit import rtc
from livekit.agents import AgentServer, JobContext, JobProcess, JobRequest, room_io

from . import compat, priority, tracing
from .assistant import ParleyAgent
from .callstate import Call
from .faults import LocalFailures, render_apology
from .interpreter import InterpreterModels, InterpreterRoom
from .load import LoadOptions, WorkerLoad
from .logs import use_human_format
from .metrics import MetricsServer, WorkerCollector, default_dir
from .providers import LocalModels, select_models
from .report import TurnTracker
from .session import build_session
from .settings import Settings
from .telephony import PhoneLine
from .textinput import ChatGuard

logger = logging.getLogger("parley.worker")

settings = Settings.load()
settings.check_providers()  # a cloud provider without its key: refuse to start, not fail mid-call
# Decided in the main process; job processes inherit PROMETHEUS_MULTIPROC_DIR from it.
METRICS_DIR = settings.metrics_dir or default_dir()


def prewarm(proc: JobProcess) -> None:
    """Runs once per job process, before any call is assigned to it."""
    # A replacement process loads while the call that took the idle one starts: load
    # behind it (agent/priority.py).
    priority.lower_for_loading()
    proc.userdata["tracer"] = tracing.setup(settings)  # None unless OTEL_EXPORTER_OTLP_ENDPOINT is set
    if settings.interpreter:  # PARLEY_INTERPRETER=1: translate instead of converse (agent/interpreter.py)
        proc.userdata["interpreter"] = loaded = InterpreterModels.load(settings)
        # The session's LLM is the translator: interpreter mode never converses.
        proc.userdata["models"] = models = LocalModels.load(settings, llm=loaded.translation_llm)
        if "en" in settings.interpreter_pair:
            loaded.voices["en"] = models.tts  # Piper
    else:
        proc.userdata["models"] = models = LocalModels.load(settings)
    # Rendered now, so it can be played even when the TTS is the model that fails.
    proc.userdata["apology"] = render_apology(models.tts, settings.failure_apology)


server = AgentServer(
    setup_fnc=prewarm,
    ws_url=settings.livekit_url,
    api_key=settings.livekit_api_key,
    api_secret=settings.livekit_api_secret.get_secret_value(),
    port=settings.health_port,
    drain_timeout=settings.drain_timeout,
    load_threshold=settings.load_threshold,
    load_fnc=WorkerLoad(LoadOptions.from_settings(settings)),
    num_idle_processes=settings.idle_processes,
    # Loading Whisper + llama.cpp + Piper takes a few seconds on 2 cores, more under load.
    initialize_process_timeout=120.0,
    # The framework's CLI sets this level on the root logger and in every job process
    # (its --log-level / LIVEKIT_LOG_LEVEL still win when given).
    log_level=settings.log_level,
    # A warning line well before the kill, so a slow leak shows in the logs first.
    job_memory_warn_mb=0.8 * settings.job_memory_limit_mb if settings.job_memory_limit_mb else 1500,
    # One runaway call is killed alone (the framework samples each job process every 5 s).
    job_memory_limit_mb=settings.job_memory_limit_mb,
    # Job processes write their metrics here; the main process serves them (agent/metrics.py).
    prometheus_multiproc_dir=str(METRICS_DIR) if settings.metrics_port else None,
)
metrics_server: MetricsServer | None = None


@server.on("worker_started")
def _on_worker_started() -> None:
    """In the worker's main process, once: people's log format, then /metrics."""
    global metrics_server
    if settings.log_format == "human":
        use_human_format()
    if settings.metrics_port and metrics_server is None:
        metrics_server = MetricsServer(
            METRICS_DIR, settings.metrics_host, settings.metrics_port,
            worker=WorkerCollector(draining=lambda: server.draining, capacity=settings.max_calls,
                                   drain_timeout=settings.drain_timeout))
        try:
            metrics_server.start()
        except OSError as e:  # __main__ checks the port first; this is a race with another program
            logger.error("metrics not served: %s:%d: %s", settings.metrics_host, settings.metrics_port, e.strerror)
            metrics_server = None


async def on_request(req: JobRequest) -> None:
    """Take every job offered: LiveKit offers only to workers reporting room (agent/load.py).
    Tell it at once if this one fills us, so the next call goes to a worker with room, and
    count the call in the load from the moment it runs (the status tick must not report
    the worker as it was before the call)."""
    await compat.report_status_now(server)
    await req.accept()  # returns once a job process runs the call
    await compat.recount_load(server)


@server.rtc_session(agent_name=settings.agent_name, on_request=on_request)
async def entrypoint(ctx: JobContext) -> None:
    priority.restore()  # loaded at low priority (prewarm); a call runs at normal priority
    ctx.log_context_fields = {"room": ctx.job.room.name}
    logger.info("call dispatched job=%s", ctx.job.id)
    await ctx.connect()
    participant = await ctx.wait_for_participant()
    ctx.log_context_fields = {**ctx.log_context_fields, "participant": participant.identity}
    logger.info("caller joined kind=%s", rtc.ParticipantKind.Name(participant.kind))
    call = Call(settings, ctx=ctx, participant=participant.identity,
                tracker=TurnTracker(room=ctx.job.room.name, participant=participant.identity,
                                    budget_ms=settings.latency_budget_ms))
    call.begin()  # counted in parley_calls_active from here to the job's end
    if (tracer := ctx.proc.userdata.get("tracer")) is not None:
        ctx.add_shutdown_callback(lambda *_: tracing.flush(tracer))
    # The report is written however the call ends (hang-up included), once the job shuts down.
    ctx.add_shutdown_callback(call.write_report)
    # A phone caller (LiveKit SIP): outbound calls wait here until the callee answers.
    call.line = PhoneLine.for_participant(ctx, participant, settings)
    if call.line is not None:
        call.line.owner = call
        if not await call.line.answered():
            return

    models: LocalModels = ctx.proc.userdata["models"]
    call.chosen = select_models(settings, models)
    ctx.add_shutdown_callback(call.chosen.aclose)  # this call's cloud clients; local models stay loaded
    logger.info("providers %s", " ".join(f"{k}={v}" for k, v in call.chosen.providers.items()))
    session = build_session(settings, models, call.chosen, call)
    LocalFailures(settings.failure_apology, ctx.proc.userdata.get("apology")).attach(session)

    # Typed chat is bounded and paced before it reaches the model (hostile input).
    chat = room_io.TextInputOptions(text_input_cb=ChatGuard(
        max_chars=settings.chat_max_chars, per_minute=settings.chat_per_minute))
    if settings.interpreter:  # PARLEY_INTERPRETER=1: one session per speaker (agent/interpreter.py)
        loaded = ctx.proc.userdata["interpreter"]
        # The session's LLM chain is the translator (LocalModels.llm is it in this mode), behind a
        # cloud LLM when PARLEY_LLM chooses one.
        room = InterpreterRoom(ctx, settings, loaded, models.vad, participant.identity,
                               translation_llm=call.chosen.llm)
        call.sections["interpreter"] = room.report
        await session.start(agent=room.agent_for(participant.identity), room=ctx.room,
                            room_options=room.room_options(participant.identity, text_input=chat), record=False)
        await room.start()
        return
    await session.start(
        agent=call.line.agent() if call.line is not None else ParleyAgent(settings),
        room=ctx.room,
        room_options=room_io.RoomOptions(
            participant_identity=participant.identity,
            audio_input=room_io.AudioInputOptions(sample_rate=16000, frame_size_ms=20),
            text_input=chat,
            # A call is one caller and one agent: when the session ends (hang-up, end_call),
            # the room goes too, so the job ends now instead of after the empty-room timeout.
            delete_room_on_close=True,
        ),
        record=False,
    )
