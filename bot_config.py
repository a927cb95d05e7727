"""The bot's configuration, in one place: CLI flags with environment-variable defaults.

    python bot.py -t webrtc --llm-url http://gpu-box:8002 --interleave on
    BOT_LLM_URL=http://gpu-box:8002 BOT_INTERLEAVE=on python bot.py -t webrtc

A client may override the per-session settings in `SESSION_KEYS` through the body of its
connection request (Pipecat's runner passes it on as `runner_args.body`), e.g. the conversation
benchmark's {"interleave": false}.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from loguru import logger

from servers.cli import add_flag

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant running on the user's own machine. Your replies are "
    "spoken aloud, so answer in one or two short sentences of plain conversational English: "
    "no lists, no markdown, no emoji."
)

TOOL_PROMPT = (
    "Use a tool only when the user asks for live information or an action that it provides, and never "
    "talk about your tools."
)
"""Appended to the system prompt when the bot has tools. Whether a reply is a call is decided by the
model's first token (`LlamaServerLLMService.call_threshold`); this keeps chit-chat away from tools
(`python -m benchmarks.tools --tool-prompt ...` measures a variant)."""

SESSION_KEYS = {"interleave": str, "prefill_interims": bool, "system_prompt": str, "voice": str, "temperature": float}
INTERLEAVE_MODES = ("all", "first", "off")
SESSION_CHECKS = {"interleave": lambda mode: mode in INTERLEAVE_MODES, "temperature": lambda t: 0 <= t <= 2}
"""Session settings whose values are limited beyond their type."""


@dataclass(frozen=True)
class BotConfig:
    """Every setting of the bot, each with its flag and BOT_* variable (defaults here, once)."""

    asr_url: str = "ws://127.0.0.1:8080"
    tts_url: str = "ws://127.0.0.1:8001"
    llm_url: str = "http://127.0.0.1:8002"
    llm_api: str = "llama-server"
    llm_model: str = "llama-server"
    llm_api_key: str = "none"
    voice: str | None = None
    language: str = "en"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    tools: str = "time,end_call"
    interleave: str = "first"
    prefill_interims: bool = True
    max_tokens: int = 200
    context_tokens: int = 0
    temperature: float = 0.7
    vad_start_secs: float = 0.1
    vad_stop_secs: float = 0.2
    turn_fallback_secs: float = 1.0
    model_server_wait_s: float = 60.0
    transcripts: str = ""
    record_audio: bool = False
    otlp_endpoint: str = ""

    @property
    def tool_names(self) -> list[str]:
        return [] if self.tools.strip() in ("", "none") else [t.strip() for t in self.tools.split(",")]

    @property
    def full_system_prompt(self) -> str:
        return f"{self.system_prompt} {TOOL_PROMPT}" if self.tool_names else self.system_prompt

    @classmethod
    def from_args(cls, args: argparse.Namespace | None) -> BotConfig:
        """The config from parsed flags (None: environment and defaults only, e.g. in tests)."""
        if args is None:
            args = add_bot_flags(argparse.ArgumentParser()).parse_args([])
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})

    def for_session(self, body: Any) -> BotConfig:
        """This config with the session overrides a client sent in its request body."""
        if not isinstance(body, dict):
            return self
        overrides = {}
        for key, value in body.items():
            kind = SESSION_KEYS.get(key)
            if kind is None:
                continue
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)  # JSON has no float type of its own: 0 arrives as an int
            if isinstance(value, kind) and SESSION_CHECKS.get(key, lambda _: True)(value):
                overrides[key] = value
            else:
                logger.warning(f"ignoring session setting {key}={value!r}")
        return dataclasses.replace(self, **overrides)


def on_off(value: str) -> bool:
    """A boolean flag's or variable's value: 1/true/yes/on, anything else is off."""
    return str(value).lower() in ("1", "true", "yes", "on")


def add_bot_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = BotConfig()
    group = parser.add_argument_group("voice agent (env BOT_*)")
    add_flag(group, "--asr-url", "BOT_ASR_URL", d.asr_url, "ASR server WebSocket")
    add_flag(group, "--tts-url", "BOT_TTS_URL", d.tts_url, "TTS server WebSocket")
    add_flag(group, "--llm-url", "BOT_LLM_URL", d.llm_url, "llama-server base URL, or an OpenAI-compatible /v1 URL")
    add_flag(group, "--llm-api", "BOT_LLM_API", d.llm_api, "LLM protocol", choices=["llama-server", "openai"])
    add_flag(group, "--llm-model", "BOT_LLM_MODEL", d.llm_model, "model name sent to an OpenAI-compatible server")
    add_flag(
        group, "--llm-api-key", "BOT_LLM_API_KEY", d.llm_api_key,
        "API key for an OpenAI-compatible server (for llama-server's /v1 with a token: the token)",
    )  # fmt: skip
    add_flag(group, "--voice", "BOT_VOICE", d.voice, "TTS voice (default: the server's first)", type=str)
    add_flag(group, "--language", "BOT_LANGUAGE", d.language, "TTS language")
    add_flag(group, "--system-prompt", "BOT_SYSTEM_PROMPT", d.system_prompt, "system prompt")
    add_flag(
        group, "--tools", "BOT_TOOLS", d.tools, "tools the agent may call (bot_tools.py), comma-separated, or none"
    )
    add_flag(
        group,
        "--interleave",
        "BOT_INTERLEAVE",
        d.interleave,
        "LLM and TTS take turns: all (one GPU shared by both), first (only the reply's first words; a "
        "few CPU cores), off (both stream at once)",
        choices=INTERLEAVE_MODES,
    )
    add_flag(
        group,
        "--prefill-interims",
        "BOT_PREFILL_INTERIMS",
        d.prefill_interims,
        "llama-server evaluates the user's words while they speak (interim transcripts), so a reply starts "
        "after only the last ones",
        type=on_off,
        nargs="?",
        const=True,
    )
    add_flag(group, "--max-tokens", "BOT_MAX_TOKENS", d.max_tokens, "longest reply in tokens")
    add_flag(
        group,
        "--context-tokens",
        "BOT_CONTEXT_TOKENS",
        d.context_tokens,
        "a conversation's window (prompt and reply); past it the oldest turns leave. 0: the LLM server's own",
    )
    add_flag(group, "--temperature", "BOT_TEMPERATURE", d.temperature, "LLM sampling temperature (0: greedy)")
    add_flag(
        group,
        "--vad-start-secs",
        "BOT_VAD_START_SECS",
        d.vad_start_secs,
        "speech that starts a turn (Silero VAD); over the bot's voice it interrupts, so short = prompt barge-in",
    )
    add_flag(group, "--vad-stop-secs", "BOT_VAD_STOP_SECS", d.vad_stop_secs, "silence that ends speech (Silero VAD)")
    add_flag(
        group,
        "--turn-fallback-secs",
        "BOT_TURN_FALLBACK_SECS",
        d.turn_fallback_secs,
        "silence after which a turn Smart Turn judged unfinished ends anyway",
    )
    add_flag(
        group,
        "--model-server-wait-s",
        "BOT_MODEL_SERVER_WAIT_S",
        d.model_server_wait_s,
        "how long the ASR and TTS clients wait for a server that is down, restarting or cold (Modal: 600)",
    )
    add_flag(
        group,
        "--transcripts",
        "BOT_TRANSCRIPTS",
        d.transcripts,
        "folder for one JSONL transcript per call (turns, tool calls, latency); empty: none",
    )
    add_flag(
        group,
        "--record-audio",
        "BOT_RECORD_AUDIO",
        d.record_audio,
        "also record each call as a stereo WAV (user left, bot right) next to its transcript",
        type=on_off,
        nargs="?",
        const=True,
    )
    add_flag(
        group,
        "--otlp-endpoint",
        "BOT_OTLP_ENDPOINT",
        d.otlp_endpoint,
        "OpenTelemetry traces (conversation, turn, stt/llm/tts spans) to this OTLP/HTTP endpoint, "
        "e.g. http://127.0.0.1:4318/v1/traces; empty: no tracing",
    )
    return parser
