"""Streaming ASR WebSocket server: one session per connection, the engine behind `ASREngine`.

Run: `python -m servers.asr --engine whisper` (embedded CPU default) or `--engine nemotron` (NeMo).
The protocol is in `servers/asr/protocol.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np
from loguru import logger
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from servers import metrics
from servers.asr import protocol
from servers.asr.engines.base import ASREngine, ASRStream
from servers.cli import add_flag, add_limit_flags, add_server_flags, main_with_clear_errors, session_limits
from servers.nemo_loading import ASR_MODEL
from servers.ports import ASR_PORT
from servers.serving import ModelServer

DEFAULT_PORT = ASR_PORT


class ASRServer(ModelServer):
    """Owns the engine and serves sessions; one session's failure never reaches another."""

    kind = "asr"

    async def warm_up(self) -> None:
        async def ignore(_: str) -> None:
            pass

        stream = self.engine.open_stream(ignore)
        try:
            await stream.feed(np.zeros(self.engine.sample_rate, dtype=np.float32))
            await stream.finalize(hard=True)
        finally:
            await stream.close()

    async def handle(self, ws: ServerConnection) -> None:
        session = Session(ws, self.session_name())
        logger.info(f"{session.name}: connected from {ws.remote_address}")
        ready_task = asyncio.create_task(session.become_ready(self))
        try:
            await session.serve()
        finally:
            ready_task.cancel()
            await session.close()


class Session:
    """One client connection: parses frames, drives its stream, answers errors."""

    def __init__(self, ws: ServerConnection, name: str) -> None:
        self.ws = ws
        self.name = name
        self.stream: ASRStream | None = None
        self.utterance_samples = 0
        self.finished_samples = 0
        """The last final's audio, which a `reopen` adds back to the utterance."""
        self.last_final = ""
        self.joined = ""
        """After a `reopen` the engine could not honour: the last final's text, put before the next ones."""

    async def send(self, message: protocol.Message) -> None:
        try:
            await self.ws.send(message.to_json())
        except ConnectionClosed:
            pass

    async def send_error(self, code: str, message: str) -> None:
        metrics.ERRORS.labels("asr", str(code)).inc()
        await self.send(protocol.Error(code=code, message=message))

    async def become_ready(self, server: ASRServer) -> None:
        await server.loaded.wait()
        self.stream = server.engine.open_stream(lambda text: self.send(protocol.Interim(self.joined_with(text))))
        await self.send(protocol.Ready(engine=server.engine.name, sample_rate=server.engine.sample_rate))

    async def serve(self) -> None:
        try:
            async for raw in self.ws:
                try:
                    await self.on_message(raw)
                except protocol.ProtocolError as e:
                    logger.warning(f"{self.name}: {e.code}: {e}")
                    await self.send_error(e.code, str(e))
                except Exception as e:
                    logger.exception(f"{self.name}: engine error; resetting the stream")
                    await self.send_error(protocol.ErrorCode.INTERNAL, f"engine error: {e}")
                    await self.reset()
        except ConnectionClosed as e:
            logger.info(f"{self.name}: closed abruptly ({e})")

    async def on_message(self, raw: str | bytes) -> None:
        if self.stream is None:
            raise protocol.ProtocolError(protocol.ErrorCode.NOT_READY, "wait for the ready message")
        if isinstance(raw, bytes):
            protocol.check_audio_frame(raw)
            self.utterance_samples += len(raw) // 2
            metrics.AUDIO_SECONDS.labels("asr").inc(len(raw) / 2 / protocol.SAMPLE_RATE)
            await self.stream.feed(np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0)
            return
        received = time.perf_counter()
        message = protocol.parse_client_message(raw)
        if isinstance(message, protocol.Reset):
            await self.reset()
        elif isinstance(message, protocol.Reopen):
            self.utterance_samples += self.finished_samples
            self.finished_samples = 0
            if not await self.stream.reopen():
                self.joined = self.last_final
        elif isinstance(message, protocol.Finalize) and not message.hard:
            await self.stream.finalize(hard=False)
        elif isinstance(message, protocol.Finalize):
            audio_ms = self.utterance_samples * 1000 / protocol.SAMPLE_RATE
            self.finished_samples, self.utterance_samples = self.utterance_samples, 0
            text = ""
            try:
                text = self.joined_with(await self.stream.finalize(hard=True))
            finally:  # every hard finalize gets its final, empty if the engine failed (its error follows)
                self.last_final, self.joined = text, ""
                latency_ms = (time.perf_counter() - received) * 1000
                metrics.ASR_FINAL_LATENCY.observe(latency_ms / 1000)
                await self.send(protocol.Final(text=text, latency_ms=round(latency_ms, 1), audio_ms=audio_ms))
            logger.debug(f"{self.name}: final in {latency_ms:.0f} ms: {text!r}")

    def joined_with(self, text: str) -> str:
        return f"{self.joined} {text}".strip()

    async def reset(self) -> None:
        self.utterance_samples = self.finished_samples = 0
        self.last_final = self.joined = ""
        if self.stream is not None:
            await self.stream.reset()

    async def close(self) -> None:
        if self.stream is not None:
            await self.stream.close()
        logger.info(f"{self.name}: gone")


def build_engine(args: argparse.Namespace) -> ASREngine:
    if args.engine == "whisper":
        from servers.asr.engines.whisper import WhisperEngine

        chosen = {"interim_interval_s": args.interim_interval, "beam_size": args.beam_size}
        options = {name: value for name, value in chosen.items() if value is not None}
        return WhisperEngine(model_path=args.whisper_model, cpu_threads=args.threads, **options)
    from servers.asr.engines.nemotron import NemotronEngine

    return NemotronEngine(model=args.nemotron_model, right_context=args.right_context)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_flags(parser, "ASR", DEFAULT_PORT)
    add_limit_flags(parser, "ASR")
    add_flag(parser, "--engine", "ASR_ENGINE", "whisper", "engine", choices=["whisper", "nemotron"])
    add_flag(
        parser, "--whisper-model", "ASR_WHISPER_MODEL", None, "CTranslate2 Whisper dir (default: packaged tiny.en)"
    )
    add_flag(parser, "--threads", "ASR_THREADS", 2, "CPU threads for the whisper engine")
    add_flag(
        parser,
        "--interim-interval",
        "ASR_INTERIM_INTERVAL",
        None,
        "whisper: seconds of new speech between interim decodes, each prefilled into the LLM (None: the engine's)",
        type=float,
    )
    add_flag(
        parser,
        "--beam-size",
        "ASR_BEAM_SIZE",
        None,
        "whisper: beam of the decodes a final is made of (interims are greedy; None: the engine's)",
        type=int,
    )
    add_flag(
        parser,
        "--nemotron-model",
        "ASR_NEMOTRON_MODEL",
        ASR_MODEL,
        "Hugging Face name or local .nemo path",
    )
    add_flag(
        parser,
        "--right-context",
        "ASR_RIGHT_CONTEXT",
        1,
        "nemotron right context: 0/1/6/13 = 80/160/560/1120 ms",
        choices=[0, 1, 6, 13],
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    await ASRServer(build_engine(args), session_limits(args)).serve(args.host, args.port, protocol.MAX_MESSAGE_BYTES)


def main(argv: list[str] | None = None) -> None:
    main_with_clear_errors("asr server", serve, parse_args(argv))
