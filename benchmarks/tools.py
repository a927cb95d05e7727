"""Tool-calling benchmark: does the LLM call the right function with the right arguments, and
only when it should?

    python -m benchmarks.tools                         # starts llama-server with the embedded 1.5B
    python -m benchmarks.tools --model qwen2.5-0.5b
    python -m benchmarks.tools --url http://HOST:8002 --json
    python -m benchmarks.tools --history 2               # each request after two spoken exchanges
    python -m benchmarks.tools --set answers             # new tools: does the answer state the result?
    python -m benchmarks.tools --mcp                     # the same tools from an MCP server

Each request is one fresh conversation (the bot's system prompt and tools, `--history` spoken
exchanges, one user turn) through `LlamaServerLLMService` and Pipecat's assistant aggregator, as in
the bot: a call runs its handler (canned results here), the aggregator records it, and the model
answers from the result. Per
request, one line: the call made, whether function and arguments are right, the reply's first
words, and the time from the context to the first spoken text. Then: right function + arguments
over the tool requests, false calls over the no-tool requests, and first-speech time p50/p90 of
tool turns vs no-tool turns (their difference is a tool turn's extra latency).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import LLMContextFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator
from pipecat.services.settings import LLMSettings

from benchmarks.mcp_server import http_mcp_server
from benchmarks.scripted import TurnRecorder, run_script
from benchmarks.servers import running_server
from benchmarks.stats import fmt
from benchmarks.tool_sets import ANSWER_TOOLS, BENCH_TOOLS
from bot_config import TOOL_PROMPT, BotConfig
from pipecat_services.llm.llama_server.service import LlamaServerLLMService
from pipecat_services.mcp_tools import MCPServer, MCPToolbox
from pipecat_services.spoken_phrases import FILLERS
from servers.processes import free_port

NO_CALL = None
REQUESTS: list[tuple[str, str | None, dict[str, Any]]] = [
    ("What's Nvidia's stock at?", "get_stock_price", {"symbol": "NVDA"}),
    ("How is Apple's stock doing today?", "get_stock_price", {"symbol": "AAPL"}),
    ("What is Microsoft trading at?", "get_stock_price", {"symbol": "MSFT"}),
    ("Tesla share price, please.", "get_stock_price", {"symbol": "TSLA"}),
    ("What's the weather like in Paris?", "get_weather", {"city": "paris"}),
    ("Is it going to be cold in Berlin today?", "get_weather", {"city": "berlin"}),
    ("Do I need an umbrella in London?", "get_weather", {"city": "london"}),
    ("How warm is it in Tokyo right now?", "get_weather", {"city": "tokyo"}),
    ("What time is it?", "get_current_time", {}),
    ("What's today's date?", "get_current_time", {}),
    ("What day of the week is it?", "get_current_time", {}),
    ("Set a timer for ten minutes.", "set_timer", {"minutes": 10}),
    ("Start a five minute timer for the eggs.", "set_timer", {"minutes": 5}),
    ("Remind me in twenty minutes to check the oven.", "set_timer", {"minutes": 20}),
    (
        "Book a table for two at Luigi's at seven pm.",
        "book_table",
        {"restaurant": "luigi", "people": 2, "time": ("7", "seven")},
    ),
    (
        "Reserve a table for four at the Golden Dragon at eight thirty tonight.",
        "book_table",
        {"restaurant": "golden dragon", "people": 4, "time": ("8", "eight")},
    ),
    (
        "Can you book Chez Marie for six people at 8 pm?",
        "book_table",
        {"restaurant": "chez marie", "people": 6, "time": ("8", "eight")},
    ),
    ("Goodbye, that's all for today.", "end_call", {}),
    ("Thanks, bye!", "end_call", {}),
    ("Okay, I'm done, you can hang up now.", "end_call", {}),
    ("Hi, how are you?", NO_CALL, {}),
    ("What is the capital of France?", NO_CALL, {}),
    ("Tell me a joke.", NO_CALL, {}),
    ("How many legs does a spider have?", NO_CALL, {}),
    ("What is two plus two?", NO_CALL, {}),
    ("Who wrote Romeo and Juliet?", NO_CALL, {}),
    ("Can you recommend a good book?", NO_CALL, {}),
    ("Why is the sky blue?", NO_CALL, {}),
    ("What's a good name for a dog?", NO_CALL, {}),
    ("How do I boil an egg?", NO_CALL, {}),
]

ANSWER_REQUESTS: list[tuple[str, str | None, dict[str, Any]]] = [
    ("How much is 100 dollars in euros?", "convert_currency", {"amount": 100}),
    ("Convert fifty British pounds to US dollars.", "convert_currency", {"amount": 50}),
    ("How many Japanese yen is 20 dollars?", "convert_currency", {"amount": 20}),
    ("What's Apple's stock price right now?", "get_stock_price", {"symbol": "AAPL"}),
    ("How is Nvidia's stock doing?", "get_stock_price", {"symbol": "NVDA"}),
    ("Set the thermostat to twenty one degrees.", "set_thermostat", {"temperature_c": 21}),
    ("Turn the heating down to 18 degrees in the bedroom.", "set_thermostat", {"temperature_c": 18}),
    ("What's the weather like in Paris?", "get_weather", {"city": "paris"}),
    ("What's the weather in Tokyo today?", "get_weather", {"city": "tokyo"}),
    ("What time is it?", "get_current_time", {}),
]
"""`--set answers`, fixed before the answer turn's work (issue 30): does the spoken answer say what
the tool returned? Scored by `states_result`."""

EARLIER = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("Why is the sky blue?", "Sunlight scatters off the air, and blue light scatters the most."),
]
"""Spoken exchanges put before each request with `--history`: in a real call a tool request rarely
comes first, and a small model's will to call falls with every answer it has spoken."""
TOOL_TURN = [
    {"role": "user", "content": "What time is it?"},
    {"role": "assistant", "content": FILLERS[0]},
    {"role": "assistant", "content": "It is ten past three in the afternoon."},
]
"""`--tool-turn`: an earlier tool turn before the history, as the context keeps it once its call and
result have left the prompt, with or without its filler: a filler must not teach the model to speak
instead of calling."""


def arguments_match(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
    """Every expected argument present: numbers equal, strings (or one of a tuple of them) contained,
    case-insensitive."""
    for key, want in expected.items():
        got = actual.get(key)
        if isinstance(want, (str, tuple)):
            wanted = want if isinstance(want, tuple) else (want,)
            if not isinstance(got, str) or not any(w.lower() in got.lower() for w in wanted):
                return False
        elif got != want:
            return False
    return True


def result_values(result: Any) -> list[Any]:
    """The numbers and words of a tool's result (JSON text or a value), nested ones too."""
    if isinstance(result, str):
        try:
            return result_values(json.loads(result))
        except ValueError:
            return [result]
    if isinstance(result, dict):
        return [v for value in result.values() for v in result_values(value)]
    if isinstance(result, list):
        return [v for value in result for v in result_values(value)]
    return [] if isinstance(result, bool) or result is None else [result]


def states_result(result: Any, request: str, reply: str) -> bool:
    """Whether `reply` says something the tool returned and the user had not said: one of the
    result's numbers (to its precision, or whole: "181" for 181.25), a time ("14:05" as 14:05 or
    2:05), or one of its short texts."""
    said_numbers = [float(n.replace(",", "")) for n in re.findall(r"\d[\d,]*(?:\.\d+)?", reply)]
    asked = re.findall(r"\d+", request)
    new = [v for v in result_values(result) if str(v).lower() not in request.lower() and str(v) not in asked]
    for value in new:
        if isinstance(value, int | float):
            if any(abs(n - value) < 0.011 or (abs(value) >= 100 and abs(n - value) < 1) for n in said_numbers):
                return True
        elif clock := re.fullmatch(r"(\d{1,2}):(\d\d)", str(value)):
            hour, minute = int(clock[1]), clock[2]
            if re.search(rf"\b0?({hour}|{hour % 12 or 12})[:. ]?{minute}\b", reply):
                return True
        elif len(str(value)) <= 30 and str(value).lower() in reply.lower():
            return True
    return False


@dataclass
class RequestResult:
    """One request of the tools benchmark: the call expected, the call made, the probability."""

    request: str
    expected: str | None
    call: str | None
    arguments: dict[str, Any] = field(default_factory=dict)
    right: bool = False
    call_probability: float | None = None
    first_speech_ms: float | None = None
    reply: str = ""
    states_result: bool | None = None
    """The spoken answer says what the call returned (None: no call)."""


async def ask(
    url: str,
    request: str,
    expected: str | None,
    args: dict[str, Any],
    system: str,
    history: int,
    tools: list[FunctionSchema],
    temperature: float = 0.0,
    tool_turn: str = "none",
) -> RequestResult:
    earlier = [
        m for q, a in EARLIER[:history] for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})
    ]
    if tool_turn != "none":
        earlier = [m for m in TOOL_TURN if tool_turn == "with-filler" or m["content"] not in FILLERS] + earlier
    context = LLMContext(
        messages=[*earlier, {"role": "user", "content": request}], tools=ToolsSchema(standard_tools=tools)
    )
    llm = LlamaServerLLMService(
        base_url=url,
        warm_context=context,
        settings=LLMSettings(system_instruction=system, temperature=temperature, max_tokens=80),
    )
    recorder = TurnRecorder(llm)
    started = time.perf_counter()
    await run_script(
        llm, recorder, LLMAssistantAggregator(context), steps=[LLMContextFrame(context), recorder.done.wait]
    )
    await llm.backend.close()
    name, arguments = recorder.call or (None, {})
    right = name == expected and (expected is None or arguments_match(args, arguments))
    first = None if recorder.first_text_at is None else round((recorder.first_text_at - started) * 1000, 1)
    p_call = recorder.replies[0].call_probability if recorder.replies else None
    reply = recorder.text.strip()
    stated = None if name is None else states_result(recorder.result, request, reply)
    return RequestResult(request, expected, name, arguments, right, p_call, first, reply, stated)


def report(model: str, results: list[RequestResult], as_json: bool) -> None:
    tool_turns = [r for r in results if r.expected]
    plain = [r for r in results if not r.expected]
    right = sum(r.right for r in tool_turns)
    false_calls = sum(r.call is not None for r in plain)
    summary = {
        "model": model,
        "right": right,
        "tool_requests": len(tool_turns),
        "false_calls": false_calls,
        "no_tool_requests": len(plain),
        "states_result": sum(bool(r.states_result) for r in tool_turns),
    }
    if as_json:
        print(json.dumps(summary))
        return
    print(
        f"\n{model}: right function and arguments {right}/{len(tool_turns)} "
        f"({100 * right / len(tool_turns):.0f} %), false calls {false_calls}/{len(plain)}"
    )
    called = [r for r in tool_turns if r.states_result is not None]
    stated = sum(bool(r.states_result) for r in tool_turns)
    print(f"answers that state the tool's result: {stated}/{len(tool_turns)} ({len(called)} called a tool)")
    for name, group in (("first speech, tool turns", tool_turns), ("first speech, no-tool turns", plain)):
        values = [r.first_speech_ms for r in group if r.first_speech_ms is not None]
        if values:
            print(fmt(name, values))


def print_result(result: RequestResult, as_json: bool) -> None:
    if as_json:
        print(json.dumps(asdict(result)), flush=True)
        return
    stated = {None: "", True: ", states the result", False: ", WITHOUT the result"}[result.states_result]
    print(
        f"{'ok ' if result.right else 'BAD'} {result.request!r}: {result.call} {result.arguments} "
        f"p(call) {result.call_probability} {result.first_speech_ms} ms -> {result.reply[:90]!r}{stated}",
        flush=True,
    )


async def main_async(args: argparse.Namespace) -> None:
    results = []
    system = f"{args.system_prompt} {args.tool_prompt}"
    requests, tools = (ANSWER_REQUESTS, ANSWER_TOOLS) if args.set == "answers" else (REQUESTS, BENCH_TOOLS)
    with tempfile.TemporaryDirectory() as tmp, http_mcp_server(free_port()) if args.mcp else nullcontext() as mcp:
        async with running_server("servers.llm", args.url, ["--model", args.model], Path(tmp) / "llm.log") as url:
            url = url.replace("ws://", "http://")
            for request, expected, arguments in requests:
                toolbox = await mcp_tools_for_one_request(mcp, tools) if mcp else None
                result = await ask(
                    url, request, expected, arguments, system, args.history, toolbox.tools if toolbox else tools,
                    args.temperature, args.tool_turn,
                )  # fmt: skip
                if toolbox:
                    await toolbox.close()
                results.append(result)
                print_result(result, args.json)
    report(args.url or args.model, results, args.json)


async def mcp_tools_for_one_request(url: str, tools: list[FunctionSchema]) -> MCPToolbox:
    """The same tools from the MCP server, through the bot's MCP client, connected for one request as
    the bot connects for one call (the LLM service closes the client when its pipeline ends)."""
    toolbox = await MCPToolbox.connect(
        [MCPServer(name="bench", tools=tuple(t.name for t in tools), url=url)], timeout_s=30
    )
    if len(toolbox.tools) != len(tools):
        raise SystemExit("the MCP server did not serve every tool of the set")
    return toolbox


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="llama-server to measure (default: start one with --model)")
    parser.add_argument("--model", default="qwen2.5-1.5b", help="packaged model name or .gguf path")
    parser.add_argument("--system-prompt", default=BotConfig().system_prompt, help="default: the bot's")
    parser.add_argument("--tool-prompt", default=TOOL_PROMPT, help="appended to it (default: the bot's)")
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        choices=range(len(EARLIER) + 1),
        help="spoken exchanges before each request (default 0: each request opens the conversation)",
    )
    parser.add_argument(
        "--set",
        choices=("calls", "answers"),
        default="calls",
        help="calls: the right call, and none for chit-chat (30 requests); answers: tools the bot never saw, "
        "does the answer state the result (10)",
    )
    parser.add_argument(
        "--mcp", action="store_true", help="the same tools from an MCP server, called through the bot's MCP client"
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (the bot's: 0.7)")
    parser.add_argument(
        "--tool-turn",
        choices=("none", "without-filler", "with-filler"),
        default="none",
        help="an earlier tool turn before the history, with or without the filler it said",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per request, then a summary")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
