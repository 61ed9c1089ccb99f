"""Optional OpenTelemetry traces: per-turn spans to an OTLP/HTTP collector.

livekit-agents already opens spans for every turn (user turn, LLM, TTS, tool calls) on
its own tracer, which does nothing until a tracer provider is set through its public hook
`livekit.agents.telemetry.set_tracer_provider`. With OTEL_EXPORTER_OTLP_ENDPOINT set, each
job process sets one that batches spans to `<endpoint>/v1/traces`; unset, no provider is
set, the framework's spans stay non-recording no-ops, and nothing is imported or exported.
"""

from __future__ import annotations

import logging
from typing import Any

from .settings import Settings

logger = logging.getLogger("parley.tracing")


def setup(settings: Settings, *, service: str = "parley-worker") -> Any | None:
    """The tracer provider now used by the framework, or None when tracing is off."""
    if not settings.otel_endpoint:
        return None
    from livekit.agents.telemetry import set_tracer_provider
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    endpoint = settings.otel_endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=5)))
    set_tracer_provider(provider, metadata={"parley.agent_name": settings.agent_name})
    logger.info("traces to %s", endpoint)
    return provider


async def flush(provider: Any, limit_s: float = 5.0) -> None:
    """At the end of a call: its last spans leave before the job process exits. Bounded:
    an unreachable collector must not hold the job (the SDK's own flush may wait 30 s)."""
    import asyncio

    try:
        await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(
            None, provider.force_flush, int(limit_s * 1000)), limit_s)
    except TimeoutError:
        logger.warning("traces not flushed within %.0fs (collector unreachable?)", limit_s)
