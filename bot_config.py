"""The bot's configuration, in one place: CLI flags with environment-variable defaults.

    python bot.py -t webrtc --llm-url http://gpu-box:8002 --interleave all
    BOT_LLM_URL=http://gpu-box:8002 BOT_INTERLEAVE=all python bot.py -t webrtc

A client may override the per-session settings in `SESSION_KEYS` through the body of its
connection request (Pipecat's runner passes it on as `runner_args.body`), e.g. the conversation
benchmark's {"interleave": false}.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from pipecat_services.spoken_phrases import BACKCHANNELS
from servers.cli import add_flag
from servers.ports import ASR_PORT, LLM_PORT, TTS_PORT

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
model's first token (`pipecat_services/llm/tool_policy.py`); this keeps chit-chat away from tools
(`python -m benchmarks.tools --tool-prompt ...` measures a variant)."""

SESSION_KEYS = {
    "interleave": str,
    "prefill_interims": bool,
    "system_prompt": str,
    "voice": str,
    "temperature": float,
    "tool_filler": bool,
    "idle_secs": float,
    "pause_on_sound": bool,
}
INTERLEAVE_MODES = ("all", "first", "off")
SESSION_CHECKS = {
    "interleave": lambda mode: mode in INTERLEAVE_MODES,
    "temperature": lambda t: 0 <= t <= 2,
    "idle_secs": lambda s: s == 0 or 1 <= s <= 3600,
}
"""Session settings whose values are limited beyond their type."""


def on_off(value: str) -> bool:
    """A boolean flag's or variable's value: 1/true/yes/on, anything else is off."""
    return str(value).lower() in ("1", "true", "yes", "on")


def setting(default: Any, help: str, **flag: Any) -> Any:
    """A bot setting's default and help, written once: its flag (`--name`) and `BOT_NAME` variable
    follow from its field name (`add_bot_flags`), the settings table in docs/agent.md from all three."""
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass(frozen=True)
class BotConfig:
    """Every setting of the bot, each with its flag and BOT_* variable (defaults here, once)."""

    asr_url: str = setting(f"ws://127.0.0.1:{ASR_PORT}", "ASR server WebSocket")
    tts_url: str = setting(f"ws://127.0.0.1:{TTS_PORT}", "TTS server WebSocket")
    llm_url: str = setting(f"http://127.0.0.1:{LLM_PORT}", "llama-server base URL, or an OpenAI-compatible /v1 URL")
    llm_api: str = setting("llama-server", "LLM protocol", choices=["llama-server", "openai"])
    llm_model: str = setting("llama-server", "model name sent to an OpenAI-compatible server")
    llm_api_key: str = setting(
        "none", "API key for an OpenAI-compatible server (for llama-server's /v1 with a token: the token)"
    )
    voice: str | None = setting(None, "TTS voice (default: the server's first)", type=str)
    language: str = setting("en", "TTS language")
    system_prompt: str = setting(DEFAULT_SYSTEM_PROMPT, "system prompt")
    tools: str = setting("time,end_call", "tools the agent may call (bot_tools.py), comma-separated, or none")
    mcp: str = setting(
        "", "JSON file of MCP servers (mcpServers, each with the `tools` it may use) whose tools the agent may call"
    )
    mcp_result_chars: int = setting(2000, "longest MCP tool result that reaches the prompt; a longer one is cut")
    tool_timeout_secs: float = setting(
        10.0, "a tool call that takes longer gives the model an error; an MCP server must connect within it"
    )
    interleave: str = setting(
        "first",
        "LLM and TTS take turns: all (one GPU shared by both), first (only the reply's first words; a "
        "few CPU cores), off (both stream at once)",
        choices=INTERLEAVE_MODES,
    )
    prefill_interims: bool = setting(
        True,
        "llama-server evaluates the user's words while they speak (interim transcripts), so a reply starts "
        "after only the last ones",
        type=on_off,
        nargs="?",
        const=True,
    )
    tool_filler: bool = setting(
        True,
        'a tool turn says "Let me check." (or the like) while its call runs, unless the answer would come first',
        type=on_off,
        nargs="?",
        const=True,
    )
    idle_secs: float = setting(
        8.0,
        "silence on both sides after which the bot asks whether the user is still there; after another, it "
        "says goodbye and ends the call (not while the bot speaks or a tool runs). 0: never",
    )
    max_tokens: int = setting(200, "longest reply in tokens")
    context_tokens: int = setting(
        0, "a conversation's window (prompt and reply); past it the oldest turns leave. 0: the LLM server's own"
    )
    temperature: float = setting(0.7, "LLM sampling temperature (0: greedy)")
    vad_start_secs: float = setting(
        0.1, "speech that starts a turn (Silero VAD); over the bot's voice it interrupts, so short = prompt barge-in"
    )
    vad_stop_secs: float = setting(0.2, "silence that ends speech (Silero VAD)")
    pause_on_sound: bool = setting(
        True,
        "the user's speech over the bot's pauses it and its words decide: a backchannel or no words (a cough) "
        "resume it, anything else interrupts. off: any speech interrupts at once",
        type=on_off,
        nargs="?",
        const=True,
    )
    backchannels: str = setting(
        ",".join(BACKCHANNELS), "what a listener says without taking the turn (pause_on_sound), comma-separated"
    )
    backchannel_wait_secs: float = setting(
        0.5, "after a sound over the bot's speech ends, how long its words may take before the bot resumes"
    )
    pause_max_secs: float = setting(2.5, "the longest a sound without words pauses the bot's speech (at most 2.9)")
    turn_hold_secs: float = setting(
        0.35,
        "silence past the VAD's stop that ends a turn whose final ends a sentence (the reply is generated "
        "meanwhile; speech before then continues the turn): pauses inside sentences run to 0.4 s",
    )
    turn_fallback_secs: float = setting(1.0, "silence after which a turn Smart Turn judged unfinished ends anyway")
    model_server_wait_s: float = setting(
        60.0, "how long the ASR and TTS clients wait for a server that is down, restarting or cold (Modal: 600)"
    )
    transcripts: str = setting("", "folder for one JSONL transcript per call (turns, tool calls, latency); empty: none")
    record_audio: bool = setting(
        False,
        "also record each call as a stereo WAV (user left, bot right) next to its transcript",
        type=on_off,
        nargs="?",
        const=True,
    )
    otlp_endpoint: str = setting(
        "",
        "OpenTelemetry traces (conversation, turn, stt/llm/tts spans) to this OTLP/HTTP endpoint, "
        "e.g. http://127.0.0.1:4318/v1/traces; empty: no tracing",
    )

    @property
    def tool_names(self) -> list[str]:
        return [] if self.tools.strip() in ("", "none") else [t.strip() for t in self.tools.split(",")]

    @property
    def full_system_prompt(self) -> str:
        return f"{self.system_prompt} {TOOL_PROMPT}" if self.tool_names or self.mcp else self.system_prompt

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


def flag_name(name: str) -> str:
    """A setting's flag: `--context-tokens` for `context_tokens`."""
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    """A setting's environment variable: `BOT_CONTEXT_TOKENS` for `context_tokens`."""
    return "BOT_" + name.upper()


def add_bot_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    group = parser.add_argument_group("voice agent (env BOT_*)")
    for f in dataclasses.fields(BotConfig):
        add_flag(group, flag_name(f.name), env_name(f.name), f.default, f.metadata["help"], **f.metadata["flag"])
    return parser


def settings_table() -> str:
    """The settings as the Markdown table in docs/agent.md (`python bot_config.py` prints it)."""
    rows = ["| flag | variable | default | |", "|---|---|---|---|"]
    for f in dataclasses.fields(BotConfig):
        default = "" if f.default is None else str(f.default)
        shown = f"`{default}`" if default and len(default) < 40 else ("in `bot_config.py`" if default else "")
        rows.append(f"| `{flag_name(f.name)}` | `{env_name(f.name)}` | {shown} | {f.metadata['help']} |")
    per_session = ", ".join(f"`{key}`" for key in SESSION_KEYS)
    rows += ["", f"A client may override {per_session} per session, in the body of its connection request."]
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
