"""A conversation's context budget: which of its oldest turns leave the prompt when the next one
would not fit the server's window, so a call of any length keeps getting answers.

One rule for every LLM service: when the prompt plus the reply's `max_tokens` would not fit
the window, whole turns leave from the oldest on (the system prompt and tools stay) until the
prompt takes about half the window. One trim thus frees room for many turns, and since only the
oldest turns leave, the kept ones are still the same tokens: our token history hands them to
llama-server unchanged, which shifts them in its cache (`--cache-reuse`) instead of evaluating
them again. Nothing is inserted in their place: llama-server reuses a cached chunk only where
it starts right after the unchanged beginning, so a note ("earlier conversation omitted") or a
summary there would cost a re-evaluation of everything kept, on every trim.
The trimmed messages replace the context's own, so what the aggregators hold is what the model
sees, and a long call's memory is bounded too.

A turn starts at a user message; a cut never separates a tool call from its result, and never
drops a call whose result has not arrived yet. `TokenLLMService` counts prompts exactly with the
server's tokenizer; an OpenAI-compatible server's prompt is estimated (`estimate_tokens`:
Pipecat's ≈4 characters a token, plus a few tokens a message).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pipecat.processors.aggregators.llm_context import LLMContext, LLMContextMessage
from pipecat.utils.context.llm_context_summarization import LLMContextSummarizationUtil

KEEP_SHARE = 0.5
"""After a trim the prompt takes about this share of what the window leaves after the reply."""


class ContextBudgetError(RuntimeError):
    """The current turn alone does not fit the window."""


@dataclass(frozen=True)
class ContextBudget:
    """`window` tokens hold the prompt and a reply of up to `reply_tokens`; a trim keeps `keep` of the rest."""

    window: int
    reply_tokens: int
    keep: float = KEEP_SHARE

    def fits(self, prompt_tokens: int) -> bool:
        return prompt_tokens + self.reply_tokens <= self.window

    @property
    def target(self) -> int:
        """The prompt size a trim aims at."""
        return int(max(0, self.window - self.reply_tokens) * self.keep)


def estimate_tokens(message: LLMContextMessage) -> int:
    """Pipecat's estimate of one message's tokens (text, tool calls, results, per-message overhead)."""
    return LLMContextSummarizationUtil.estimate_context_tokens(LLMContext(messages=[message]))


def estimate_prompt_tokens(messages: list[LLMContextMessage], tools: Any = None) -> int:
    """Estimated tokens of a whole request: its messages and its tool definitions."""
    tool_text = json.dumps(tools, default=str) if tools else ""
    return sum(estimate_tokens(m) for m in messages) + LLMContextSummarizationUtil.estimate_tokens(tool_text)


def _role(message: LLMContextMessage) -> str | None:
    return message.get("role") if isinstance(message, dict) else None


def _pending(message: LLMContextMessage) -> bool:
    """A tool result that has not arrived: Pipecat's placeholder for a running (or async) call."""
    content = message.get("content") if isinstance(message, dict) else None
    if content == "IN_PROGRESS":
        return True
    try:
        parsed = json.loads(content) if isinstance(content, str) else None
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("type") == "async_tool" and parsed.get("status") == "started"


def cut_points(messages: list[LLMContextMessage]) -> list[int]:
    """Indices where the kept part may begin: a user message after the leading system messages,
    with every tool result after it answering a call after it, and no running call before it."""
    head = leading_system(messages)
    answered: set[str] = set()
    points = []
    for i in range(len(messages) - 1, head - 1, -1):
        message = messages[i]
        role = _role(message)
        if role == "tool":
            if _pending(message):
                points.clear()
            answered.add(message.get("tool_call_id"))
        elif role == "assistant":
            answered -= {c.get("id") for c in message.get("tool_calls") or [] if isinstance(c, dict)}
        elif role == "user" and not answered and i > head:
            points.append(i)
    return points[::-1]


def leading_system(messages: list[LLMContextMessage]) -> int:
    """How many system messages open the conversation (they always stay)."""
    count = 0
    while count < len(messages) and _role(messages[count]) == "system":
        count += 1
    return count


def trimmed(
    messages: list[LLMContextMessage], prompt_tokens: int, budget: ContextBudget
) -> list[LLMContextMessage] | None:
    """`messages` without their oldest turns, so that a prompt of `prompt_tokens` shrinks to about
    `budget.target` (at worst only the current turn stays); None when no turn can leave."""
    points = cut_points(messages)
    if not points:
        return None
    head = leading_system(messages)
    excess, dropped, cut = prompt_tokens - budget.target, 0, points[-1]
    start = head
    for point in points:
        dropped += sum(estimate_tokens(m) for m in messages[start:point])
        start = point
        if dropped >= excess:
            cut = point
            break
    return [*messages[:head], *messages[cut:]]
