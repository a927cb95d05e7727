"""Prometheus metrics of our model servers, served on GET /metrics (prometheus-client's text format).

One server per process, so the default registry holds exactly this server's metrics; the `server`
label (asr, tts) lets one dashboard show both.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)

SESSIONS = Gauge("model_server_sessions", "Open WebSocket sessions", ["server"])
REFUSED = Counter("model_server_refused_total", "WebSocket handshakes refused, by HTTP status", ["server", "status"])
ERRORS = Counter("model_server_errors_total", "Error messages sent to clients, by error code", ["server", "code"])
AUDIO_SECONDS = Counter("model_server_audio_seconds_total", "Audio heard (ASR) or synthesized (TTS)", ["server"])
QUEUE_DEPTH = Gauge("model_server_engine_queue_depth", "Units of work waiting for the engine", ["server"])
BATCH_SIZE = Histogram(
    "model_server_engine_batch_size", "Streams in one engine step", ["server"], buckets=(1, 2, 4, 8, 16, 32, 64)
)
ASR_FINAL_LATENCY = Histogram(
    "asr_final_latency_seconds", "Hard finalize received → final sent", buckets=LATENCY_BUCKETS
)
TTS_FIRST_AUDIO = Histogram(
    "tts_first_audio_seconds", "A reply's first text received → its first audio sent", buckets=LATENCY_BUCKETS
)


def exposition() -> tuple[bytes, str]:
    """The body and content type of GET /metrics."""
    return generate_latest(), CONTENT_TYPE_LATEST
