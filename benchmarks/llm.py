"""LLM benchmark: first-segment latency and KV-cache reuse over a scripted 11-turn conversation,
one turn of which calls the bot's time tool (a reply with the call, then one with the answer).

    python -m benchmarks.llm                          # starts llama-server with the embedded 1.5B
    python -m benchmarks.llm --model qwen2.5-0.5b --no-interleave
    python -m benchmarks.llm --url http://HOST:8002   # an already running llama-server

Each turn goes through `LlamaServerLLMService` and Pipecat's assistant aggregator, as in the bot.
Interleaved, the TTS side of the interleaving answers each mark at once, so this measures the LLM
alone: first_segment_ms is the service's TTFB (context in → first segment out; free streaming:
first token). cache hit = llama-server's cache_n / the prompt tokens it had already seen in this
conversation; "of prompt" = cache_n / (cache_n + prompt_n), the share of the whole prompt.
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
from pipecat_services.llama_llm import LlamaServerLLMService
from pipecat_services.interleaving import Interleaver, TTSMarkFrame

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


def long_script(turns: int) -> list[str]:
    """`turns` user turns: ~90 tokens each (four topics and a question), then `LONG_CHECKS`."""
    topics, questions = LONG_TOPICS, LONG_QUESTIONS
    said = [
        " ".join([*(topics[(i * 4 + k) % len(topics)] for k in range(4)), questions[i % len(questions)]])
        for i in range(turns - len(LONG_CHECKS))
    ]
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
        base_url=url, interleaver=interleaver, warm_context=context,
        settings=LLMSettings(system_instruction=SYSTEM, temperature=temperature, seed=7, max_tokens=160),
    )
    results = []
    for i, question in enumerate(SCRIPT, 1):
        context.add_message({"role": "user", "content": question})
        first, recorder = FirstText(), TurnRecorder(llm)
        stages = [llm, *([AnswerMarks(interleaver)] if interleaver else []), first, recorder]
        down = await run_script(
            *stages, LLMAssistantAggregator(context), steps=[LLMContextFrame(context), recorder.done.wait],
            pipeline_params=PipelineParams(enable_metrics=True),
        )
        ttfb = [d.value for f in down if isinstance(f, MetricsFrame) for d in f.data if isinstance(d, TTFBMetricsData)]
        for j, reply in enumerate(recorder.replies):
            results.append(
                {
                    "turn": i,
                    "after_call": j > 0,
                    "first_segment_ms": round(max(ttfb) * 1000, 1) if ttfb and j == 0 else None,
                    "cache_hit_ratio": reply["cache_hit_ratio"],
                    "prompt_cached_share": reply["prompt_cached_share"],
                    "prompt_tokens": reply["prompt_tokens"],
                    "call": recorder.call[0] if recorder.call and j == 0 else None,
                    "call_probability": reply.get("call_probability"),
                    "first_segment": first.text,
                    "reply": recorder.text,
                }
            )
    await llm.backend.close()
    return results


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with running_server("servers.llm", args.url, ["--model", args.model], Path(tmp) / "llm.log") as url:
            url = url.replace("ws://", "http://")
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
    print(fmt("first segment (TTFB)", [r["first_segment_ms"] for r in results if r["first_segment_ms"] and not r["call"]]))
    print(fmt("cache hit ratio, replies 2+", [r["cache_hit_ratio"] for r in later], unit="", decimals=3))
    print(fmt("cached share of prompt, replies 2+", [r["prompt_cached_share"] for r in later], unit="", decimals=3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="llama-server to measure (default: start one with --model)")
    parser.add_argument("--model", default="qwen2.5-1.5b", help="packaged model name or .gguf path")
    parser.add_argument("--no-interleave", dest="interleave", action="store_false", help="free streaming")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object per turn")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
