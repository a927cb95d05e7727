"""Observable: the bot's OpenTelemetry spans (to a real OTLP/HTTP receiver) and its call records."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import wave
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from servers.processes import LocalServer, free_port
from tests.conftest import serve_bot
from tests.test_bot import one_question

pytestmark = pytest.mark.timeout(300)


class OTLPReceiver(ThreadingHTTPServer):
    """The receiving end of OTLP/HTTP traces (protobuf), keeping each span's name and attributes."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["Content-Length"])))
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            receiver.spans.append((span.name, {a.key: a.value for a in span.attributes}))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    server = OTLPReceiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("calls")


@pytest.fixture(scope="module")
def observed_bot(tmp_path_factory, asr_server, tts_server, llm_server, receiver, records) -> Iterator[LocalServer]:
    env = {"BOT_OTLP_ENDPOINT": receiver.endpoint, "BOT_TRANSCRIPTS": str(records), "BOT_RECORD_AUDIO": "1"}
    yield from serve_bot(tmp_path_factory, asr_server, tts_server, llm_server, env)


async def test_a_call_is_traced_and_recorded(observed_bot, receiver, records, whisper, say_wav):
    said, latency, _ = await one_question(observed_bot.http_url, whisper, say_wav("What is the capital of France?"))
    assert latency is not None and said

    deadline = time.monotonic() + 60  # spans leave in batches; the conversation's when the call ends
    while not {"conversation", "turn", "stt", "llm", "tts"} <= {name for name, _ in receiver.spans}:
        assert time.monotonic() < deadline, sorted({name for name, _ in receiver.spans})
        await asyncio.sleep(0.5)
    turns = [attributes for name, attributes in receiver.spans if name == "turn"]
    assert any("voice_agent.server_v2v_ms" in t for t in turns), turns

    deadline = time.monotonic() + 30  # the call's records are closed when its pipeline ends
    while not list(records.glob("*.wav")) or not wave.open(str(next(records.glob("*.wav")))).getnframes():
        assert time.monotonic() < deadline, list(records.iterdir())
        await asyncio.sleep(0.2)
    (transcript,) = records.glob("*.jsonl")
    lines = [json.loads(line) for line in transcript.read_text().splitlines()]
    events = {line["event"]: line for line in lines}
    assert "capital" in events["user"]["text"].lower(), lines
    assert events["assistant"]["text"] and events["assistant"]["interrupted"] is False, lines
    assert events["latency"]["server_v2v_ms"] == latency["server_v2v_ms"], lines
    assert all(line["at"].endswith("+00:00") for line in lines)
    with wave.open(str(transcript.with_suffix(".wav"))) as recording:
        assert recording.getnchannels() == 2 and recording.getframerate() == 16000
        assert recording.getnframes() / 16000 > 2  # the question and the answer, at least
