"""Conversations of any length, through the real LLM service and a real llama-server: a
conversation three times the slot's window never fails, and the last turns stay coherent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pipecat.frames.frames import ErrorFrame, LLMContextFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator
from pipecat.services.settings import LLMSettings
from pipecat.tests.utils import run_test

from benchmarks.llm import LONG_CHECKS, LONG_SYSTEM, long_script
from pipecat_services.llm.llama_server.service import LlamaServerLLMService
from pipecat_services.llm.openai_compatible import BudgetedOpenAILLMService
from tests.conftest import RestartableServer, serve_for_session

pytestmark = pytest.mark.servers

SLOT = 1024
"""Small, so a conversation three times its size is cheap; a trim keeps ~500 tokens, more than
llama-server's 256-token minimum for shifting a cached chunk."""


@pytest.fixture(scope="module")
def small_slot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableServer]:
    yield from serve_for_session(tmp_path_factory, "servers.llm", ["--model", "smollm2-135m", "--ctx-size", str(SLOT)])


async def converse(llm: LlamaServerLLMService, turns: list[str]) -> tuple[LLMContext, list[dict], list[str]]:
    """Each user turn through the service and Pipecat's assistant aggregator; checks every turn got
    an answer and that the history still follows the context. Returns the context, each turn's
    numbers and everything said."""
    context, numbers, said = LLMContext(), [], []
    for i, text in enumerate(turns):
        context.add_message({"role": "user", "content": text})
        _, up = await run_test(
            Pipeline([llm, LLMAssistantAggregator(context)]),
            frames_to_send=[LLMContextFrame(context)],
            start_timeout=10,
        )
        assert not [f for f in up if isinstance(f, ErrorFrame)], f"turn {i}: {up}"
        reply = context.messages[-1]
        assert reply["role"] == "assistant" and reply["content"].strip(), f"turn {i}: no answer"
        asked = await llm.backend.render(
            (await llm.prompts.invocation(LLMContext(messages=context.messages[:-1]))).messages
        )
        assert asked.startswith("<|im_start|>system\n" + LONG_SYSTEM), "the system prompt left"
        assert llm.prompts.history.text.startswith(asked), f"turn {i}: the history no longer follows the context"
        numbers.append(llm.last_reply)
        said += [text, reply["content"]]
    return context, numbers, said


async def test_three_times_the_slot_never_fails_and_trims_rarely_and_cheaply(small_slot_server):
    llm = LlamaServerLLMService(
        base_url=small_slot_server.http_url,
        settings=LLMSettings(system_instruction=LONG_SYSTEM, temperature=0.0, seed=1, max_tokens=16),
    )
    turns = long_script(32)
    context, numbers, said = await converse(llm, turns)
    whole = [
        {"role": role, "content": text} for role, text in zip(["user", "assistant"] * len(turns), said, strict=False)
    ]
    conversation = len(await llm.backend.tokenize(await llm.backend.render(whole)))
    assert conversation >= 3 * SLOT, conversation
    assert all(n.prompt_tokens + 16 <= SLOT for n in numbers), "the window comes from the server's /props"
    assert 2 <= llm.prompts.trims <= len(turns) // 5, llm.prompts.trims
    trims = [n for n in numbers if n.trimmed]
    assert len(trims) == llm.prompts.trims, "one trim per turn that needed one"
    for n in trims:
        assert n.prompt_n < 0.2 * n.prompt_tokens, f"the kept turns were evaluated again: {n}"
    assert len(context.messages) < len(said) // 2, "the context itself is trimmed"
    await llm.backend.close()


async def test_the_last_turns_of_a_long_conversation_stay_coherent(tool_llm_server):
    """The embedded 1.5B (SmolLM2 is not coherent enough) with a 600-token budget of its own."""
    llm = LlamaServerLLMService(
        base_url=tool_llm_server.http_url,
        context_tokens=600,
        settings=LLMSettings(system_instruction=LONG_SYSTEM, temperature=0.0, seed=1, max_tokens=24),
    )
    turns = long_script(11)
    _, numbers, said = await converse(llm, turns)
    assert llm.prompts.trims >= 2 and all(n.prompt_tokens + 24 <= 600 for n in numbers)
    answers = said[1::2][-len(LONG_CHECKS) :]
    for (question, expected), answer in zip(LONG_CHECKS, answers, strict=False):
        assert expected is None or expected.lower() in answer.lower(), (question, answer)
    await llm.backend.close()


async def test_the_openai_path_trims_by_the_same_rule(small_slot_server):
    """Pipecat's OpenAI service on llama-server's /v1: estimated counts, the window from /props."""
    llm = BudgetedOpenAILLMService(
        base_url=small_slot_server.http_url + "/v1",
        api_key="none",
        settings=BudgetedOpenAILLMService.Settings(
            model="smollm2", system_instruction=LONG_SYSTEM, temperature=0.0, max_completion_tokens=16
        ),
    )
    context = LLMContext()
    turns = long_script(18, sentences=8)
    for i, text in enumerate(turns):
        context.add_message({"role": "user", "content": text})
        _, up = await run_test(
            Pipeline([llm, LLMAssistantAggregator(context)]),
            frames_to_send=[LLMContextFrame(context)],
            start_timeout=10,
        )
        assert not [f for f in up if isinstance(f, ErrorFrame)], f"turn {i}: {up}"
        assert context.messages[-1]["role"] == "assistant", f"turn {i}: no answer"
    assert llm.context_tokens == SLOT
    assert 2 <= llm.trims <= len(turns) // 3, llm.trims
    assert context.messages[-1]["role"] == "assistant" and context.messages[-2]["content"] == turns[-1]
    assert sum(len(m["content"]) for m in context.messages) < 4 * SLOT, "the context itself is trimmed"


async def test_a_turn_too_long_for_the_window_fails_alone(small_slot_server):
    """A user turn longer than the whole window gets a clear error; the next turn is answered."""
    llm = LlamaServerLLMService(
        base_url=small_slot_server.http_url,
        settings=LLMSettings(system_instruction=LONG_SYSTEM, temperature=0.0, seed=1, max_tokens=16),
    )
    context = LLMContext()
    for text, fails in ((" ".join(long_script(4, sentences=60)[:1]), True), ("What is my name?", False)):
        context.add_message({"role": "user", "content": text})
        _, up = await run_test(
            Pipeline([llm, LLMAssistantAggregator(context)]),
            frames_to_send=[LLMContextFrame(context)],
            start_timeout=10,
        )
        errors = [f.error for f in up if isinstance(f, ErrorFrame)]
        assert bool(errors) == fails and all("the window holds" in e for e in errors), errors
    assert context.messages[-1]["role"] == "assistant" and len(context.messages) == 2
    await llm.backend.close()
