"""The llama-server LLM service against a real llama-server running SmolLM2-135M from its package."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import urllib.request
from types import SimpleNamespace

import pytest
from pipecat.frames.frames import (
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.settings import LLMSettings
from pipecat.tests.utils import run_test
from pipecat.utils.time import time_now_iso8601

from benchmarks.llm import AnswerMarks
from benchmarks.scripted import Watch, run_script
from bot_config import BotConfig
from pipecat_services.interleaving import Interleaver
from pipecat_services.llm.generation import Interleaving
from pipecat_services.llm.interim_prefill import InterimPrefill
from pipecat_services.llm.llama_server.service import LlamaServerLLMService
from pipecat_services.tts import TTSServerTTSService
from tests.conftest import RestartableServer

SYSTEM = "You are a helpful voice assistant. Answer in two or three short sentences."
QUESTIONS = [
    "What is the capital of France?",
    "Tell me about the Eiffel Tower.",
    "How many legs does a spider have?",
    "What is two plus two?",
]
GREEDY = LLMSettings(temperature=0.0, seed=1, max_tokens=80)


def new_context(question: str) -> LLMContext:
    return LLMContext(messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])


def reply_text(frames) -> str:
    return "".join(f.text for f in frames if isinstance(f, LLMTextFrame))


async def one_turn(llm: LlamaServerLLMService, context: LLMContext, *extra: FrameProcessor) -> list:
    down, _ = await run_test(Pipeline([llm, *extra]), frames_to_send=[LLMContextFrame(context)], start_timeout=10)
    return down


async def test_interleaved_segments_give_the_same_text_as_one_free_stream(llm_server):
    free = LlamaServerLLMService(base_url=llm_server.http_url, settings=GREEDY)
    free_text = reply_text(await one_turn(free, new_context(QUESTIONS[1])))
    interleaver = Interleaver()
    chunked = LlamaServerLLMService(
        base_url=llm_server.http_url, settings=GREEDY, interleaving=Interleaving(interleaver, segment_tokens=8)
    )
    frames = await one_turn(chunked, new_context(QUESTIONS[1]), AnswerMarks(interleaver))
    segments = [f.text for f in frames if isinstance(f, LLMTextFrame)]
    assert len(segments) >= 2, segments
    assert "".join(segments) == free_text
    assert len([b for b in interleaver.busy if b.who == "llm"]) == len(segments)


async def test_only_the_first_segment_waits_and_it_ends_on_a_whole_word(llm_server):
    free = LlamaServerLLMService(base_url=llm_server.http_url, settings=GREEDY)
    free_text = reply_text(await one_turn(free, new_context(QUESTIONS[1])))
    interleaver = Interleaver()
    first_only = LlamaServerLLMService(
        base_url=llm_server.http_url,
        settings=GREEDY,
        interleaving=Interleaving(interleaver, first_segment_words=(2, 3), waiting_segments=1),
    )
    frames = await one_turn(first_only, new_context(QUESTIONS[1]), AnswerMarks(interleaver))
    texts = [f.text for f in frames if isinstance(f, LLMTextFrame)]
    assert "".join(texts) == free_text
    assert len([b for b in interleaver.busy if b.who == "llm"]) == 1, "more than the first segment waited"
    first = texts[0]
    assert len(first.split()) <= 4 and free_text.startswith(first), (first, free_text)
    assert first[-1].isspace() or free_text[len(first)] in " ,.;:!?", "the first segment cut a word in two"


async def test_cache_hit_ratio_from_the_second_turn_on(llm_server):
    llm = LlamaServerLLMService(base_url=llm_server.http_url, settings=GREEDY)
    context = new_context(QUESTIONS[0])
    turns = []
    for question in QUESTIONS[1:] + ["Thanks!"]:
        await run_test(
            Pipeline([llm, LLMAssistantAggregator(context)]),
            frames_to_send=[LLMContextFrame(context)],
            start_timeout=10,
        )
        turns.append(llm.last_reply)
        assert context.messages[-1]["role"] == "assistant"
        context.add_message({"role": "user", "content": question})
    assert all(t.cache_hit_ratio >= 0.95 for t in turns[1:]), turns
    assert all(t.prompt_cached_share > 0.6 for t in turns[1:]), turns
    assert all(t.reusable_tokens > previous.prompt_tokens for previous, t in zip(turns, turns[1:], strict=False)), turns


async def test_an_interruption_truncates_the_history_to_what_was_spoken(llm_server):
    llm = LlamaServerLLMService(
        base_url=llm_server.http_url, settings=LLMSettings(temperature=0.0, seed=1, max_tokens=300)
    )
    context = new_context("Tell me a long story about a dragon.")
    pieces = Watch(LLMTextFrame)
    down = await run_script(
        llm, pieces, steps=[LLMContextFrame(context), lambda: pieces.reached(16), InterruptionFrame()]
    )
    generated = reply_text(down)
    seen_by_server = len(llm.prompts.history.tokens)
    words = generated.split(" ")
    spoken = " ".join(words[: len(words) // 2])
    assert len(words) >= 6, generated
    context.add_message({"role": "assistant", "content": spoken})
    context.add_message({"role": "user", "content": "Stop. What is the capital of France?"})
    await run_test(Pipeline([llm]), frames_to_send=[LLMContextFrame(context)], start_timeout=10)
    turn = llm.last_reply
    rendered = await llm.backend.render((await llm.prompts.invocation(context)).messages)
    assert llm.prompts.history.text.startswith(rendered), "the history must follow the context, not what was generated"
    assert spoken in rendered and generated not in llm.prompts.history.text
    assert turn.reusable_tokens < seen_by_server
    assert turn.cache_hit_ratio >= 0.95, turn
    await llm.backend.close()


async def test_words_prefilled_while_the_user_speaks_are_not_evaluated_again(llm_server):
    """Interim words go to the server as they come (InterimPrefill), so the turn evaluates only what
    follows them; a revised interim shares its prefix; without interims the whole question is new.
    When the last interim is the whole question, the prefill has also sampled the reply's first
    token: the turn only continues from it, with the very reply it would have given anyway."""
    question = "Can you tell me about the history of the Eiffel Tower in Paris?"
    partial = ["Can you tell me about", "Can you tell me about the history of the Eiffel"]
    turns, replies = {}, {}
    for name, interims in (("none", []), ("partial", partial), ("whole", [*partial, question])):
        context = LLMContext(messages=[{"role": "system", "content": SYSTEM}])
        llm = LlamaServerLLMService(base_url=llm_server.http_url, settings=GREEDY, warm_context=context)

        async def end_turn(context: LLMContext = context) -> None:
            context.add_message({"role": "user", "content": question})  # what the user aggregator does

        seen = Watch(InterimTranscriptionFrame)  # after InterimPrefill: it has handed the words on
        steps: list = [llm.prefilled, VADUserStartedSpeakingFrame()]
        for n, words in enumerate(interims, 1):
            steps += [
                InterimTranscriptionFrame(words, "user", time_now_iso8601()),
                lambda n=n, seen=seen: seen.reached(n),
                llm.prefilled,
            ]
        steps += [end_turn, LLMContextFrame(context)]
        ended = Watch(LLMFullResponseEndFrame)
        down = await run_script(
            InterimPrefill(llm), seen, llm, ended, steps=[*steps, lambda ended=ended: ended.reached(1)]
        )
        replies[name] = reply_text(down)
        turns[name] = llm.last_reply
        question_tokens = len(await llm.backend.tokenize(question))
        await llm.backend.close()
    assert replies["none"].strip()
    evaluated = {name: turn.prompt_n for name, turn in turns.items()}
    assert evaluated["none"] >= question_tokens, evaluated
    assert evaluated["partial"] <= evaluated["none"] - question_tokens // 2, evaluated
    assert not turns["partial"].first_token_prefilled, turns
    assert turns["whole"].first_token_prefilled and evaluated["whole"] == 1, turns
    # The same reply: compared on its first words, as the splits of the prompt into batches may
    # round differently and tip a near-tie later on (a lost or repeated first token shows at once).
    opening = {name: reply.split()[:4] for name, reply in replies.items()}
    assert opening["whole"] == opening["partial"] == opening["none"], replies


async def test_interims_are_prefilled_only_while_the_user_speaks():
    """Once the VAD hears silence the ASR computes the final: no prefill competes with it then.
    (The LLM here only records what it is handed: this is InterimPrefill's own rule.)"""
    handed: list[str] = []
    recorder = SimpleNamespace(prefill_user_words=handed.append, drop_pending_prefill=lambda: handed.append("<drop>"))
    seen = Watch(InterimTranscriptionFrame)
    vad = Watch(VADUserStoppedSpeakingFrame)
    steps = [
        VADUserStartedSpeakingFrame(),
        InterimTranscriptionFrame("what is", "user", time_now_iso8601()),
        TranscriptionFrame("What is the", "user", time_now_iso8601()),
        InterimTranscriptionFrame("capital", "user", time_now_iso8601()),
        lambda: seen.reached(2),
        VADUserStoppedSpeakingFrame(),
        lambda: vad.reached(1),
        InterimTranscriptionFrame("capital of France", "user", time_now_iso8601()),
        lambda: seen.reached(3),
    ]
    await run_script(InterimPrefill(recorder), seen, vad, steps=steps)
    assert handed == ["what is", "What is the capital", "<drop>"]  # words not yet sent are dropped at the stop


async def test_llm_and_tts_never_run_at_once(llm_server, tts_server):
    interleaver = Interleaver()
    llm = LlamaServerLLMService(
        base_url=llm_server.http_url, settings=GREEDY, interleaving=Interleaving(interleaver, segment_tokens=8)
    )
    tts = TTSServerTTSService(url=tts_server.url, interleaver=interleaver)
    # The EndFrame after the context waits for the whole reply: generated, then played.
    await run_test(Pipeline([llm, tts]), frames_to_send=[LLMContextFrame(new_context(QUESTIONS[1]))], start_timeout=10)
    llm_busy = [b for b in interleaver.busy if b.who == "llm"]
    tts_busy = [b for b in interleaver.busy if b.who == "tts"]
    assert len(llm_busy) >= 2 and len(tts_busy) >= 1, interleaver.busy
    for a in llm_busy:
        for b in tts_busy:
            assert a.end <= b.start or b.end <= a.start, (a, b)


@pytest.mark.parametrize("interleave", [False, True])
async def test_reports_ttfb_usage_and_cache_metrics(llm_server, interleave):
    from pipecat.frames.frames import MetricsFrame
    from pipecat.metrics.metrics import LLMUsageMetricsData, TTFBMetricsData
    from pipecat.pipeline.worker import PipelineParams

    from pipecat_services.turn_metrics import PromptCacheMetricsData

    interleaver = Interleaver() if interleave else None
    llm = LlamaServerLLMService(
        base_url=llm_server.http_url, settings=GREEDY, interleaving=Interleaving(interleaver) if interleaver else None
    )
    extra = [AnswerMarks(interleaver)] if interleaver else []
    down, _ = await run_test(
        Pipeline([llm, *extra]),
        frames_to_send=[LLMContextFrame(new_context(QUESTIONS[0]))],
        pipeline_params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
        start_timeout=10,
    )
    data = [d for f in down if isinstance(f, MetricsFrame) for d in f.data]
    assert any(isinstance(d, TTFBMetricsData) and d.value > 0 for d in data)
    usage = [d for d in data if isinstance(d, LLMUsageMetricsData)]
    assert usage and usage[0].value.completion_tokens > 0
    assert any(isinstance(d, PromptCacheMetricsData) and 0 <= d.value <= 1 for d in data)


def prompt_tokens_evaluated(server: RestartableServer) -> float:
    """llama-server's count of prompt tokens it evaluated (cache hits excluded), from /metrics."""
    metrics = urllib.request.urlopen(f"{server.http_url}/metrics", timeout=10).read().decode()
    return float(re.search(r"^llamacpp:prompt_tokens_total (\S+)$", metrics, re.M)[1])


async def test_the_bot_warms_a_server_that_starts_after_it(tmp_path):
    """At start the bot waits for llama-server (which starts later here) and prefills its system
    prompt and tools, so a call's own warm-up finds them cached instead of evaluating them."""
    import bot

    server = RestartableServer("servers.llm", ["--model", "smollm2-135m"], tmp_path / "llm.log")
    config = dataclasses.replace(BotConfig.from_args(None), llm_url=server.http_url, model_server_wait_s=120)
    warming = asyncio.create_task(bot.warm_llm(config))
    await asyncio.sleep(2)
    assert not warming.done(), "the warm-up gave up on a server that was not up yet"
    await asyncio.to_thread(server.run)
    try:
        await asyncio.wait_for(warming, 120)
        warmed = prompt_tokens_evaluated(server)
        llm = bot.make_llm(config, None, bot.new_context(config))
        assert isinstance(llm, LlamaServerLLMService)
        try:
            invocation = await llm.prompts.invocation(bot.new_context(config))
            assert invocation.tools, "the bot's default tools"
            system = len(await llm.prompts.side_tokens(invocation.messages, invocation.tools))
            assert warmed >= system, (warmed, system)
            await llm.warm_server(config.model_server_wait_s)  # what a call does when it starts
            assert prompt_tokens_evaluated(server) - warmed <= 2, "the call evaluated the system prompt again"
        finally:
            await llm.backend.close()
    finally:
        server.stop()
