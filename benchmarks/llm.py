"""LLM benchmark: first-segment latency and KV-cache reuse over a scripted 11-turn conversation,
one turn of which calls the bot's time tool (a reply with the call, then one with the answer).

    python -m benchmarks.llm                          # starts llama-server with the embedded 1.5B
    python -m benchmarks.llm --model qwen2.5-0.5b --no-interleave
    python -m benchmarks.llm --url http://HOST:8002   # an already running llama-server
    python -m benchmarks.llm --long                   # 30 turns through a 1024-token slot: trim turns

Each turn goes through `LlamaServerLLMService` and Pipecat's assistant aggregator, as in the bot.
Interleaved, the TTS side of the interleaving answers each mark at once, so this measures the LLM
alone: first_segment_ms is the service's TTFB (context in → first segment out; free streaming:
first token). cache hit = llama-server's cache_n / the prompt tokens it had already seen in this
conversation; "of prompt" = cache_n / (cache_n + prompt_n), the share of the whole prompt.

`--long`: a conversation several times the slot's window (`--ctx-size`, default 1024), so the oldest
turns leave the context every few turns; prints the TTFB of normal and of trim turns, twice: as the
service does it (the kept turns' tokens unchanged, shifted in llama-server's cache) and with the
token history's tail reuse off (the kept turns evaluated again), which is what a trim would cost
without it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import Frame, LLMContextFrame, LLMTextFrame, MetricsFrame
from pipecat.metrics.metrics import TTFBMetricsData
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import LLMSettings

from benchmarks.scripted import TurnRecorder, run_script
from benchmarks.servers import running_server
from benchmarks.stats import fmt
from bot_config import BotConfig
from bot_tools import TOOLS
from pipecat_services.interleaving import Interleaver, TTSMarkFrame
from pipecat_services.llm.generation import Interleaving
from pipecat_services.llm.llama_server.service import LlamaServerLLMService

SYSTEM = BotConfig().full_system_prompt
SCRIPT = [
    "What time is it?",
    "Thanks. What is the capital of France?",
    "What is it famous for?",
    "How tall is the Eiffel Tower, roughly?",
    "How many legs does a spider have?",
    "And an insect?",
    "What is twelve times twelve?",
    "Can you suggest a quick dinner with eggs and rice?",
    "How long should I cook the rice?",
    "Tell me a fun fact about octopuses.",
    "Thanks, that's all for now. Goodbye!",
]

LONG_SYSTEM = "You are a helpful voice assistant. Answer in one short sentence. The user's name is Ada."
LONG_TOPICS = [
    "I went for a long walk by the river this morning and saw two herons fishing in the shallow water.",
    "My neighbour is building a wooden shed in his garden, and the hammering starts at seven every day.",
    "I am reading a novel about a lighthouse keeper who lives alone on an island in the north sea.",
    "We are planning a trip to the mountains next month, and I still need new boots for the hike.",
    "The bakery on the corner started selling rye bread with sunflower seeds, and it is very good.",
    "My sister plays the cello in an amateur orchestra that rehearses every Thursday evening.",
    "I tried to grow tomatoes on the balcony this year, but the pigeons ate most of the flowers.",
    "The train to the city was late again today because of a signal failure near the old bridge.",
    "My grandfather used to repair clocks, and his workshop still smells of oil and old wood.",
]
LONG_QUESTIONS = ["What do you think?", "Does that sound nice?", "Any advice?", "What would you do?"]
LONG_CHECKS = [
    ("What is my name?", "Ada"),
    ("By the way, my favourite colour is green.", None),
    ("What is my favourite colour?", "green"),
]
"""The last turns of a long conversation, with a word each answer must contain: a fact of the
system prompt and one of the recent turns."""


def long_script(turns: int, sentences: int = 4) -> list[str]:
    """`turns` user turns of `sentences` topics and a question (~22 tokens a sentence), then `LONG_CHECKS`."""
    said = []
    for i in range(turns - len(LONG_CHECKS)):
        topics = [LONG_TOPICS[(i * sentences + k) % len(LONG_TOPICS)] for k in range(sentences)]
        said.append(" ".join([*topics, LONG_QUESTIONS[i % len(LONG_QUESTIONS)]]))
    return [*said, *(text for text, _ in LONG_CHECKS)]


class AnswerMarks(FrameProcessor):
    """The TTS side of interleaving with no TTS: every mark is answered at once (measures the LLM alone)."""

    def __init__(self, interleaver: Interleaver) -> None:
        super().__init__()
        self.interleaver = interleaver

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSMarkFrame):
            self.interleaver.reached(frame.mark_id)
        else:
            await self.push_frame(frame, direction)


class FirstText(FrameProcessor):
    """Remembers the first piece of text of the reply (the first segment when interleaved)."""

    def __init__(self) -> None:
        super().__init__()
        self.text: str | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMTextFrame) and self.text is None:
            self.text = frame.text
        await self.push_frame(frame, direction)


async def run_conversation(url: str, interleave: bool, temperature: float) -> list[dict]:
    """One row per LLM reply: a user turn that calls the time tool gets two (the call, then the answer)."""
    interleaver = Interleaver() if interleave else None
    context = LLMContext(tools=ToolsSchema(standard_tools=[TOOLS["time"]]))
    llm = LlamaServerLLMService(
        base_url=url,
        interleaving=Interleaving(interleaver) if interleaver else None,
        warm_context=context,
        settings=LLMSettings(system_instruction=SYSTEM, temperature=temperature, seed=7, max_tokens=160),
    )
    results = []
    for i, question in enumerate(SCRIPT, 1):
        context.add_message({"role": "user", "content": question})
        first, recorder = FirstText(), TurnRecorder(llm)
        stages = [llm, *([AnswerMarks(interleaver)] if interleaver else []), first, recorder]
        down = await run_script(
            *stages,
            LLMAssistantAggregator(context),
            steps=[LLMContextFrame(context), recorder.done.wait],
            pipeline_params=PipelineParams(enable_metrics=True),
        )
        ttfb = [d.value for f in down if isinstance(f, MetricsFrame) for d in f.data if isinstance(d, TTFBMetricsData)]
        for j, reply in enumerate(recorder.replies):
            results.append(
                {
                    "turn": i,
                    "after_call": j > 0,
                    "first_segment_ms": round(max(ttfb) * 1000, 1) if ttfb and j == 0 else None,
                    "cache_hit_ratio": reply.cache_hit_ratio,
                    "prompt_cached_share": reply.prompt_cached_share,
                    "prompt_tokens": reply.prompt_tokens,
                    "call": recorder.call[0] if recorder.call and j == 0 else None,
                    "call_probability": reply.call_probability,
                    "first_segment": first.text,
                    "reply": recorder.text,
                }
            )
    await llm.backend.close()
    return results


async def run_long_conversation(url: str, turns: int, interleave: bool, reuse_tail: bool) -> list[dict]:
    """One row per turn of `long_script(turns)`: TTFB, whether the turn trimmed, cache numbers."""
    interleaver = Interleaver() if interleave else None
    llm = LlamaServerLLMService(
        base_url=url,
        interleaving=Interleaving(interleaver) if interleaver else None,
        settings=LLMSettings(system_instruction=LONG_SYSTEM, temperature=0.0, seed=7, max_tokens=40),
    )
    if not reuse_tail:
        llm.prompts.history.min_tail_tokens = 10**9
    context, rows = LLMContext(), []
    for i, question in enumerate(long_script(turns)):
        context.add_message({"role": "user", "content": question})
        recorder = TurnRecorder(llm)
        stages = [llm, *([AnswerMarks(interleaver)] if interleaver else []), recorder]
        down = await run_script(
            *stages,
            LLMAssistantAggregator(context),
            steps=[LLMContextFrame(context), recorder.done.wait],
            pipeline_params=PipelineParams(enable_metrics=True),
        )
        ttfb = [d.value for f in down if isinstance(f, MetricsFrame) for d in f.data if isinstance(d, TTFBMetricsData)]
        turn = llm.last_reply
        rows.append(
            {"turn": i + 1, "trimmed": turn.trimmed, "ttfb_ms": round(max(ttfb) * 1000, 1),
             "prompt_tokens": turn.prompt_tokens, "cache_n": turn.cache_n, "prompt_n": turn.prompt_n,
             "messages": len(context.messages), "reply": recorder.text}
        )  # fmt: skip
    await llm.backend.close()
    return rows


async def main_long(args: argparse.Namespace, url: str) -> None:
    for reuse_tail in (True, False):
        rows = await run_long_conversation(url, args.turns, args.interleave, reuse_tail)
        label = "kept turns shifted in the cache" if reuse_tail else "kept turns evaluated again (tail reuse off)"
        print(f"\n{label}:")
        for r in rows:
            print(json.dumps(r) if args.json else (
                f"turn {r['turn']:>2}  {r['ttfb_ms']:7.1f} ms  {'TRIM' if r['trimmed'] else '    '}  prompt "
                f"{r['prompt_tokens']:>4}  cached {r['cache_n']:>4}  evaluated {r['prompt_n']:>4}  {r['reply'][:50]!r}"
            ))  # fmt: skip
        normal, trims = [r for r in rows[1:] if not r["trimmed"]], [r for r in rows if r["trimmed"]]
        print(fmt("first segment (TTFB), normal turns", [r["ttfb_ms"] for r in normal]))
        print(fmt("first segment (TTFB), trim turns", [r["ttfb_ms"] for r in trims]))
        print(fmt("prompt tokens evaluated, trim turns", [r["prompt_n"] for r in trims], unit="", decimals=0))
        print(f"{len(trims)} trims in {len(rows)} turns")


async def main_async(args: argparse.Namespace) -> None:
    server_args = ["--model", args.model, *(["--ctx-size", str(args.ctx_size)] if args.long else [])]
    with tempfile.TemporaryDirectory() as tmp:
        async with running_server("servers.llm", args.url, server_args, Path(tmp) / "llm.log") as url:
            url = url.replace("ws://", "http://")
            if args.long:
                await main_long(args, url)
                return
            await run_conversation(url, args.interleave, args.temperature)
            results = await run_conversation(url, args.interleave, args.temperature)
    for r in results:
        label = "after call" if r["after_call"] else f"{r['first_segment_ms'] or 0:7.1f} ms"
        print(
            json.dumps(r)
            if args.json
            else f"turn {r['turn']:>2}  {label:>10}  cache hit {r['cache_hit_ratio']:.3f}"
            f"  of prompt {r['prompt_cached_share']:.3f}  prompt {r['prompt_tokens']:>4}"
            f"  {('call ' + r['call']) if r['call'] else repr(r['first_segment'])}"
        )
    mode = "interleaved" if args.interleave else "free streaming"
    later = results[1:]
    print(f"\nmodel {args.model if not args.url else args.url}, {mode}, {len(SCRIPT)} turns (one calls a tool)")
    print(
        fmt("first segment (TTFB)", [r["first_segment_ms"] for r in results if r["first_segment_ms"] and not r["call"]])
    )
    print(fmt("cache hit ratio, replies 2+", [r["cache_hit_ratio"] for r in later], unit="", decimals=3))
    print(fmt("cached share of prompt, replies 2+", [r["prompt_cached_share"] for r in later], unit="", decimals=3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="llama-server to measure (default: start one with --model)")
    parser.add_argument("--model", default="qwen2.5-1.5b", help="packaged model name or .gguf path")
    parser.add_argument("--no-interleave", dest="interleave", action="store_false", help="free streaming")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object per turn")
    parser.add_argument("--long", action="store_true", help="a conversation past the window: trim turns")
    parser.add_argument("--turns", type=int, default=30, help="--long: user turns")
    parser.add_argument("--ctx-size", type=int, default=1024, help="--long: the slot's window")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
