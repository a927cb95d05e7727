"""The LLM path sends llama-server exactly what it sent before: scripted conversations (plain and
interleaved turns, tool calls, a trim, a prefill while the user speaks, an interruption) replayed
against a recording server (`tests/llm_replay.py`) give the recorded requests, byte for byte.

After a change meant to alter the requests, record them again and review the diff:
`LLM_REPLAY_RECORD=1 .venv/bin/python -m pytest tests/test_llm_replay.py`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.frames.frames import InterruptionFrame, LLMContextFrame
from pipecat.services.llm_service import FunctionCallParams

from tests.llm_replay import Conversation, RecordingLlamaServer

RECORDED = Path(__file__).parent / "data" / "llm_requests.json"


async def weather(params: FunctionCallParams) -> None:
    await params.result_callback({"city": params.arguments["city"], "temperature_c": 23, "sky": "clear"})


async def timer(params: FunctionCallParams) -> None:
    await params.result_callback({"ok": True})


TOOLS = [
    FunctionSchema(
        name="get_weather",
        description="Get the current weather in a city.",
        properties={"city": {"type": "string"}},
        required=["city"],
        handler=weather,
    ),
    FunctionSchema(
        name="set_timer",
        description="Start a countdown timer.",
        properties={"minutes": {"type": "integer", "maximum": 5}},
        required=["minutes"],
        handler=timer,
    ),
]
PLAIN = ["What is the capital of France?", "Tell me about the Eiffel Tower.", "How many legs does a spider have?"]


async def plain(url: str) -> Conversation:
    return _turns(Conversation(url), PLAIN)


async def interleaved(url: str) -> Conversation:
    return _turns(Conversation(url, interleave={"segment_tokens": 24}), PLAIN)


async def first_segment_only(url: str) -> Conversation:
    return _turns(Conversation(url, interleave={"waiting_segments": 1}), PLAIN[1:2])


async def tools(url: str) -> Conversation:
    requests = ["What's the weather in Paris?", "Thanks! Why is the sky blue?", "And what about Rome?"]
    return _turns(Conversation(url, tools=TOOLS), [*requests, "Set a timer for ten minutes."])


async def tools_interleaved(url: str) -> Conversation:
    return _turns(Conversation(url, tools=TOOLS, interleave={}), ["What's the weather in Paris?"])


async def trim(url: str) -> Conversation:
    return _turns(Conversation(url, max_tokens=60), [*PLAIN, "What is two plus two?", *PLAIN])


async def prefill(url: str) -> Conversation:
    conversation = Conversation(url, tools=TOOLS)
    llm = conversation.llm

    def words(said: str) -> Callable[[], Awaitable[None]]:
        async def prefilled() -> None:
            llm.prefill_user_words(said)
            await llm.prefilled()

        return prefilled

    conversation.steps += [words("What is the"), words("What is the capital of France?")]
    conversation.turn("What is the capital of France?")
    conversation.steps += [words("How many legs")]
    return conversation.turn("How many legs does a spider have?")


async def interruption(url: str) -> Conversation:
    conversation = Conversation(url, max_tokens=200)
    context = conversation.context

    async def say(words: str) -> None:
        context.add_message({"role": "user", "content": words})

    async def spoken() -> None:
        context.add_message({"role": "assistant", "content": "Once upon a time, in a valley"})

    conversation.steps += [
        lambda: say("Tell me a long story about a dragon."),
        LLMContextFrame(context),
        lambda: conversation.texts.reached(5),
        InterruptionFrame(),
        spoken,
        lambda: say("Stop. What is two plus two?"),
        LLMContextFrame(context),
        lambda: conversation.ends.reached(2),
    ]
    return conversation


SCRIPTS = {
    s.__name__: s
    for s in (plain, interleaved, first_segment_only, tools, tools_interleaved, trim, prefill, interruption)
}
N_CTX = {"trim": 900}


def _turns(conversation: Conversation, said: list[str]) -> Conversation:
    for words in said:
        conversation.turn(words)
    return conversation


async def replay(name: str) -> tuple[list[str], Any]:
    server = RecordingLlamaServer(N_CTX.get(name, 8192))
    await server.start()
    try:
        conversation = await SCRIPTS[name](server.url)
        await conversation.run(aggregate=name != "interruption")
    finally:
        await server.stop()
    return server.recorded(), conversation


@pytest.mark.parametrize("name", list(SCRIPTS))
async def test_requests_to_llama_server_are_unchanged(name):
    recorded, conversation = await replay(name)
    assert recorded, "the conversation sent nothing"
    if name == "trim":
        assert conversation.llm.prompts.trims >= 1, "the trim script never trimmed"
    if os.environ.get("LLM_REPLAY_RECORD"):
        everything = json.loads(RECORDED.read_text()) if RECORDED.exists() else {}
        everything[name] = recorded
        RECORDED.parent.mkdir(exist_ok=True)
        RECORDED.write_text(json.dumps(everything, indent=1, sort_keys=True) + "\n")
    expected = json.loads(RECORDED.read_text())[name]
    for i, (got, want) in enumerate(zip(recorded, expected, strict=False)):
        assert got == want, f"request {i} of {name!r} changed"
    assert len(recorded) == len(expected)
