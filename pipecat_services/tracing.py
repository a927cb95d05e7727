"""OpenTelemetry traces of the bot, off unless an OTLP endpoint is given.

The spans are Pipecat's own: conversation → turn (its TurnTraceObserver) → stt / llm / tts (its
service decorators, which our services carry), exported over OTLP/HTTP. Our per-turn latency
(`turn_metrics.py`) goes onto each turn span as `voice_agent.*` attributes.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

from pipecat_services.pipecat_internals import open_turn_span

SERVICE_NAME = "nemotron-voice-agent"
_endpoint: str | None = None


def export_to(endpoint: str) -> None:
    """Send spans to `endpoint` (once per process: Pipecat's runner calls the bot once per call)."""
    global _endpoint
    if not endpoint or _endpoint is not None:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from pipecat.utils.tracing.setup import setup_tracing

    if setup_tracing(SERVICE_NAME, exporter=OTLPSpanExporter(endpoint=endpoint)):
        _endpoint = endpoint
        logger.info(f"tracing: spans go to {endpoint}")


def on_turn_span(worker: Any, latency: Any) -> None:
    """Put a turn's latency numbers on the turn span Pipecat has open (when tracing)."""
    observer = worker.turn_trace_observer
    span = open_turn_span(observer) if observer is not None else None
    if span is None:
        if observer is not None:
            logger.debug("tracing: no open turn span for this turn's latency")
        return
    for key, value in latency.model_dump(exclude={"processor", "model"}).items():
        if value is not None:
            span.set_attribute(f"voice_agent.{key}", value)
