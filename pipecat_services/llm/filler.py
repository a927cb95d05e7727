"""A short acknowledgement ("Let me check.") while a tool call runs: `CallFiller`.

A tool turn takes two LLM passes, seconds on CPU, and the first-token decision (`tool_policy.py`)
knows a call is coming a whole call's generation before Pipecat's `on_function_calls_started`, so
the filler starts there. Pipecat's assistant aggregator runs the answer only once the bot has
stopped speaking, so a filler still playing when the answer could start delays it: the filler
starts at once only when the server's speed says the answer will take longer than the filler
(generating the call, evaluating its result, the answer's first words), else only if no answer has
begun after `wait_s` (a quick server, a slow tool). The context keeps the filler as spoken; the
model's prompt leaves it out (`without_fillers`), so it never learns to say "Let me check." instead
of calling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipecat_services.call_ending import is_farewell, last_user_words
from pipecat_services.llm.generation import ServerSpeed
from pipecat_services.spoken_phrases import FILLERS, VariedPhrases

FILLER_TEXT_TYPE = "filler"
"""The text type of a filler's `TTSSpeakFrame`: not an answer (`CallEnder`)."""
CALL_TOKENS = 24
"""Tokens of a call after its first (`<tool_call>`, the name, short arguments): Qwen2.5's
get_current_time call is 21."""
RESULT_TOKENS = 40
"""Tokens of the call's result as the answer's prompt adds them (the time tool's: 40-70)."""
ANSWER_TOKENS = 8
"""Tokens of the answer before its first words go to the TTS."""
FILLER_S = 0.9
"""A filler's audio (Piper: "Let me check." 0.8 s) and its synthesis."""


@dataclass
class CallFiller:
    """Chooses whether and when a tool turn's filler is spoken, and which."""

    wait_s: float = 1.0
    """When the call is quick to generate (a GPU), the filler waits this long for the answer."""
    phrases: VariedPhrases = field(default_factory=lambda: VariedPhrases(FILLERS))

    def delay_s(self, messages: list[Any], speed: ServerSpeed | None) -> float | None:
        """Seconds from the call decision to the filler; None for none (the user said goodbye: the
        call is `end_call`, which speaks at once). An unknown speed counts as slow."""
        if is_farewell(last_user_words(messages)):
            return None
        if speed is None:
            return 0.0
        answer_ms = (CALL_TOKENS + ANSWER_TOKENS) * speed.decode_ms + RESULT_TOKENS * speed.prompt_ms
        return 0.0 if answer_ms / 1000 >= FILLER_S else self.wait_s


def without_fillers(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages without the assistant's fillers (the model's view; see the module's docstring)."""
    return [m for m in messages if not (m["role"] == "assistant" and str(m.get("content", "")).strip() in FILLERS)]
