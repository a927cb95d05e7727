"""When a reply may be a tool call, and whether it is one: `ToolPolicy`.

Small models know what to call but not when, so the model's first token decides: a reply is a call
when the tokens that open one are at least `threshold` likely; later in a conversation, where a
small model stops calling, an unlikely call is judged again on the user's last words alone. Calls
and results of earlier user turns leave the prompt, and one user turn gets one call that succeeds
and one retry. The measurements behind each number are in docs/tools.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pipecat_services.llm.backend import LLMBackend
from pipecat_services.llm.prompt import Invocation
from pipecat_services.llm.tool_calls import is_error, tool_names

MAX_FAILED_CALLS = 2
"""Failed tool calls one user turn may make (a call and one retry); then the model must speak."""
CALL_THRESHOLD = 0.25
"""First-token probability of opening a call from which the reply is one (Qwen2.5 1.5B: requests
0.3-0.6, other questions 0-0.18)."""
RECHECK_FLOOR = 0.0005
"""From this first-token call probability up to the threshold, a request after earlier user turns
is judged again alone: in a conversation the 1.5B puts 0.0002-0.44 on tool requests."""
GREEDY = {"temperature": 0.0}
"""How calls and answers from a tool's result are sampled: they are facts, not style. At the bot's
0.7 the 1.5B wrote another function's name (convert_currency for a stock price) and answered a result
with "Got it!" (`benchmarks.tools --set answers --temperature 0.7`, docs/tools.md)."""
ALONE_PREAMBLE = " "
"""Begins the system prompt of a request judged alone, so that prompt shares no token prefix with
the conversation and llama-server caches each apart (words there would change the judgment)."""


class Decision(Enum):
    """What the first token's call probability says about the reply."""

    SPEAK = "speak"
    CALL = "call"
    JUDGE_ALONE = "judge alone"


@dataclass(frozen=True)
class ReplyPlan:
    """How a reply is sampled up to its first token, and whether that token decides a call."""

    fields: dict[str, Any]
    """Sampling settings and the backend's constraints for a reply that turns out speech."""
    decides_call: bool


@dataclass(frozen=True)
class ToolPolicy:
    """Decides, for one conversation's replies, speak / call / judge again alone."""

    backend: LLMBackend
    threshold: float | None = CALL_THRESHOLD
    """None: no first-token decision; the model may speak and then call (a lazy grammar)."""
    recheck_floor: float = RECHECK_FLOOR

    def plan(self, sampling: dict[str, Any], invocation: Invocation) -> ReplyPlan:
        """The reply's fields before its first token: speech only once calls are spent (greedy when it
        answers a result), a lazy call grammar without a threshold, else speech for now and the first
        token decides."""
        tools = invocation.tools
        if not tools:
            return ReplyPlan(sampling, False)
        if not calls_allowed(invocation.messages, invocation.tool_choice):
            greedy = GREEDY if invocation.messages[-1]["role"] == "tool" else {}
            return ReplyPlan(sampling | greedy | self.backend.speech_fields(), False)
        if self.threshold is None:
            return ReplyPlan(sampling | self.backend.call_fields(tool_names(tools), forced=False), False)
        return ReplyPlan(sampling | self.backend.speech_fields(), True)

    def decide(self, probability: float, alone: list[dict[str, Any]] | None = None) -> Decision:
        """A call from `threshold` on; below it, down to `recheck_floor`, judged again on `alone` (the
        request by itself, `last_request_alone`; None: it cannot be, or it was)."""
        assert self.threshold is not None, "no first-token decision without a threshold"
        if probability >= self.threshold:
            return Decision.CALL
        if alone is not None and probability >= self.recheck_floor:
            return Decision.JUDGE_ALONE
        return Decision.SPEAK

    def call_fields(self, sampling: dict[str, Any], tools: list[dict[str, Any]]) -> dict[str, Any]:
        """The fields of a reply that is a call of one of `tools` and nothing else, sampled greedily."""
        return sampling | GREEDY | self.backend.call_fields(tool_names(tools), forced=True)

    def judges_alone(self, tools: list[dict[str, Any]] | None) -> bool:
        """Whether requests may be judged alone, so that prompt is worth prefilling at start."""
        return bool(tools) and self.threshold is not None


def call_probability(next_tokens: list[tuple[str, float]]) -> float:
    """How likely the model is to begin its reply with a call: the probability of the first tokens
    that open one (`<tool_call>`, `<`, ```` ``` ````, `{`), from its next-token distribution."""
    return sum(p for text, p in next_tokens if text.lstrip()[:1] in ("<", "`", "{"))


def without_earlier_calls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages the model sees: tool calls and results of earlier user turns leave the prompt
    (their spoken answers stay), since one call in the history makes a small model call on every
    later turn."""
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=0)
    return [
        m
        for i, m in enumerate(messages)
        if i >= last_user or not (m["role"] == "tool" or (m["role"] == "assistant" and m.get("tool_calls")))
    ]


def with_text_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool results that are text given to the model as that text: Pipecat's assistant aggregator
    stores every result as JSON, so a text result (an MCP tool's, often JSON itself) arrives quoted
    and escaped, and the 1.5B then answers "I can't assist with that" (`benchmarks.tools --mcp`)."""
    return [
        {**m, "content": text} if m["role"] == "tool" and isinstance(text := _json_string(m.get("content")), str) else m
        for m in messages
    ]


def _json_string(content: Any) -> str | None:
    if not isinstance(content, str) or not content.startswith('"'):
        return None
    try:
        value = json.loads(content)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def last_request_alone(messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The user's last message after `alone_system_prompt`, for judging a call without the
    conversation; None unless the turn begins a new user request after earlier ones."""
    if sum(m["role"] == "user" for m in messages) < 2 or messages[-1]["role"] != "user":
        return None
    return [alone_system_prompt(messages), messages[-1]]


def alone_system_prompt(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The conversation's system message with `ALONE_PREAMBLE` before it."""
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    if not isinstance(system, str):  # content parts
        system = " ".join(part.get("text", "") for part in system)
    return {"role": "system", "content": ALONE_PREAMBLE + system}


def calls_allowed(messages: list[dict[str, Any]], tool_choice: Any) -> bool:
    """No call once one of this user turn has succeeded, after `MAX_FAILED_CALLS` failures, or
    with `tool_choice: none`."""
    since_user = next((i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "user"), -1)
    results = [m.get("content") for m in messages[since_user + 1 :] if m["role"] == "tool"]
    failed = sum(is_error(r) for r in results)
    return tool_choice != "none" and len(results) == failed and failed < MAX_FAILED_CALLS
