"""Are the bot's model servers ready, and what the bot says while they are not.

Ready means each server's GET /health answers 200, which our ASR and TTS servers do only once their
model has answered an inference, and llama-server once its model is loaded (it runs a warm-up decode
while loading). While one is not:
- the runner's `/status` answers 503 with what is still loading (compose's and the launcher's health
  check of the bot), and the Playground page says the bot is warming up, reloading until it is not;
- a call that starts hears "One moment, please." from a clip in this package, which needs no TTS
  server (that may be the one loading). Its first answer comes as soon as the models are up: every
  client waits for its server (`model_server.py`, `llm/llama_server/client.py`).
"""

from __future__ import annotations

import asyncio
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import soxr
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pipecat.frames.frames import OutputAudioRawFrame

from servers.auth import auth_headers

PROBE_TIMEOUT_S = 3.0
"""One health probe; a server that takes longer (a cold Modal container) counts as not ready."""
ONE_MOMENT_WAV = Path(__file__).with_name("one_moment.wav")
"""Piper's joe voice (the embedded TTS) saying "One moment, please.", 16 kHz mono."""
PLAYGROUND_PATHS = ("/client", "/client/")
WARMING_UP_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2"><title>Warming up</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 4em auto">
<h1>The voice agent is warming up</h1>
<p>Still loading: {waiting}. This page opens the Playground by itself once every model has answered.</p>
</body></html>
"""


def _read_clip(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as clip:
        return np.frombuffer(clip.readframes(clip.getnframes()), np.int16), clip.getframerate()


ONE_MOMENT, ONE_MOMENT_RATE = _read_clip(ONE_MOMENT_WAV)


def one_moment(sample_rate: int) -> OutputAudioRawFrame:
    """The clip at the output transport's own rate: its resampler serves one input rate per call (the
    TTS's), and audio at its own rate passes without one."""
    pcm = soxr.resample(ONE_MOMENT, ONE_MOMENT_RATE, sample_rate).astype(np.int16)
    return OutputAudioRawFrame(audio=pcm.tobytes(), sample_rate=sample_rate, num_channels=1)


def health_url(server_url: str) -> str:
    """GET /health of a server given by its WebSocket or HTTP URL."""
    base = server_url.rstrip("/").replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    return f"{base}/health"


@dataclass(frozen=True)
class ModelServers:
    """The servers one call uses, by name; `llm_url` None when the LLM is not ours to watch (an
    OpenAI-compatible API)."""

    asr_url: str
    tts_url: str
    llm_url: str | None

    def health_urls(self) -> dict[str, str]:
        urls = {"ASR": self.asr_url, "TTS": self.tts_url, "LLM": self.llm_url}
        return {name: health_url(url) for name, url in urls.items() if url}

    async def waiting_for(self) -> list[str]:
        """The names of the servers not ready now (one probe of each, concurrently)."""
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def ready(url: str) -> bool:
                try:
                    async with session.get(url, headers=auth_headers(url)) as response:
                        return response.status == 200
                except (TimeoutError, aiohttp.ClientError):
                    return False

            urls = self.health_urls()
            answers = await asyncio.gather(*(ready(url) for url in urls.values()))
        return [name for name, answer in zip(urls, answers, strict=True) if not answer]


def add_warming_up_routes(app: FastAPI, servers: ModelServers) -> None:
    """Answer the runner's `/status` with 503 and the Playground with a warming-up page until every
    model server is ready; everything else (the WebRTC offer included) as usual."""

    @app.middleware("http")
    async def warming_up(request: Request, call_next: Any) -> Any:
        path = request.url.path
        if path != "/status" and path not in PLAYGROUND_PATHS:
            return await call_next(request)
        waiting = await servers.waiting_for()
        if not waiting:
            return await call_next(request)
        if path == "/status":
            return JSONResponse({"status": "warming up", "waiting_for": waiting}, status_code=503)
        return HTMLResponse(WARMING_UP_PAGE.format(waiting=", ".join(waiting)), status_code=503)
