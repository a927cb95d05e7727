"""A recording stand-in for llama-server, and scripted conversations to replay against it.

The server speaks llama-server's HTTP API on loopback with a ChatML template and one token per
character, answers from a table of scripted replies (chosen by the prompt's last user message), and
records every request body exactly as the client sent it. `tests/test_llm_replay.py` compares the
recordings with `tests/data/llm_requests.json`: a refactor of the LLM path must send llama-server
the same bytes (token ids, grammars, sampling fields) as before.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator
from pipecat.services.settings import LLMSettings

from benchmarks.llm import AnswerMarks
from benchmarks.scripted import Step, Watch, run_script
from pipecat_services.interleaving import Interleaver
from pipecat_services.llm.generation import Interleaving
from pipecat_services.llm.llama_server.service import LlamaServerLLMService

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
ASSISTANT = f"{IM_START}assistant\n"
SYSTEM = "You are a helpful voice assistant. Answer in two or three short sentences."
WORD = re.compile(r"\s*\S+")
CALL_ID = re.compile(r"call_[0-9a-f]{12}")


@dataclass(frozen=True)
class Reply:
    """What the scripted model answers to one user message."""

    text: str = ""
    call_probability: float = 0.0
    """On the reply's first token, in the conversation."""
    alone_probability: float = 0.0
    """On the first token of the request judged alone."""
    call: str = ""
    """The reply under a forced call grammar."""
    after_result: str = ""
    stall_after: int | None = None
    """Words streamed before the stream hangs until the client closes it."""


def weather_call(city: str) -> str:
    return f'<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "{city}"}}}}\n</tool_call>'


REPLIES = {
    "What is the capital of France?": Reply(
        "Paris is the capital of France. It sits on the Seine, and about two million people live in the city."
    ),
    "How many legs does a spider have?": Reply(
        "A spider has eight legs. Insects have six, which is one way to tell them apart."
    ),
    "Tell me about the Eiffel Tower.": Reply(
        "The Eiffel Tower is an iron tower in Paris, finished in 1889 for a world fair. It is about three hundred "
        "metres tall, and for decades it was the tallest building in the world. Millions visit it every year."
    ),
    "What is two plus two?": Reply("Two plus two is four."),
    "Thanks! Why is the sky blue?": Reply(
        "Sunlight scatters off the air, and blue light scatters the most, so the sky looks blue.",
        call_probability=0.0001,
    ),
    "What's the weather in Paris?": Reply(
        call_probability=0.6, call=weather_call("Paris"), after_result="It is twenty-three degrees and clear in Paris."
    ),
    "And what about Rome?": Reply(
        call_probability=0.01,
        alone_probability=0.7,
        call=weather_call("Rome"),
        after_result="Rome is at twenty-three degrees, with a clear sky.",
    ),
    "Set a timer for ten minutes.": Reply(
        call_probability=0.8,
        call='<tool_call>\n{"name": "set_timer", "arguments": {"minutes": 10}}\n</tool_call>',
        after_result="Sorry, I can only set timers of up to five minutes.",
    ),
    "Tell me a long story about a dragon.": Reply(
        "Once upon a time, in a valley far away, there lived a dragon who loved to read books by the fire.",
        stall_after=6,
    ),
}


def render(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    """A ChatML template: tools after the system prompt, calls as `<tool_call>` JSON."""
    text = ""
    for m in messages:
        content = m.get("content") or ""
        content = content if isinstance(content, str) else json.dumps(content)
        if m["role"] == "system" and tools:
            content += "\n# Tools\n" + json.dumps(tools, sort_keys=True)
        calls = "".join(
            f"<tool_call>{json.dumps(c['function'], sort_keys=True)}</tool_call>" for c in m.get("tool_calls") or []
        )
        text += f"{IM_START}{m['role']}\n{content}{calls}{IM_END}\n"
    return text + ASSISTANT


class RecordingLlamaServer:
    """llama-server's endpoints that `LlamaServerBackend` uses, answering from `REPLIES`."""

    def __init__(self, n_ctx: int = 8192) -> None:
        self.n_ctx = n_ctx
        self.requests: list[str] = []
        self._cached: list[int] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/health", lambda _: web.json_response({"status": "ok"}))
        app.router.add_get(
            "/props", lambda _: web.json_response({"default_generation_settings": {"n_ctx": self.n_ctx}})
        )
        app.router.add_post("/apply-template", self._apply_template)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_post("/completion", self._completion)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _record(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        body = (await request.read()).decode()
        if request.path != "/health":
            self.requests.append(f"{request.method} {request.path} {body}")
        return await handler(request)

    def recorded(self) -> list[str]:
        """The requests, with the random ids of tool calls numbered in order of appearance."""
        ids: dict[str, str] = {}
        return [CALL_ID.sub(lambda m: ids.setdefault(m[0], f"call_{len(ids) + 1}"), r) for r in self.requests]

    async def _apply_template(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"prompt": render(body["messages"], body.get("tools"))})

    async def _tokenize(self, request: web.Request) -> web.Response:
        return web.json_response({"tokens": [ord(c) for c in (await request.json())["content"]]})

    def _timings(self, prompt: list[int]) -> dict[str, Any]:
        same = 0
        while same < min(len(prompt), len(self._cached)) and prompt[same] == self._cached[same]:
            same += 1
        self._cached = list(prompt)
        return {"cache_n": same, "prompt_n": len(prompt) - same, "prompt_ms": 1.0}

    async def _completion(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompt = body["prompt"]
        timings = self._timings(prompt)
        if body["n_predict"] == 0:
            return web.json_response({"content": "", "timings": timings})
        text = "".join(map(chr, prompt))
        reply, alone = self._reply(text)
        grammar = body.get("grammar", "")
        if "json-call" in grammar and not body.get("grammar_lazy"):
            full = reply.call
        elif text.rfind(f"{IM_START}tool\n") > text.rfind(f"{IM_START}user\n"):
            full = reply.after_result
        else:
            full = reply.text
        generated = text[text.rfind(ASSISTANT) + len(ASSISTANT) :]
        words = WORD.findall(full[len(generated) :] if full.startswith(generated) else "")
        if "n_probs" in body:
            p = reply.alone_probability if alone else reply.call_probability
            top = [{"token": "<tool_call>", "logprob": _log(p)}, {"token": "The", "logprob": _log(1 - p)}]
            first = words[0] if words else ""
            return web.json_response(
                {
                    "content": first,
                    "tokens": [ord(c) for c in first],
                    "stop_type": "limit" if words else "eos",
                    "timings": timings,
                    "completion_probabilities": [{"top_logprobs": top}],
                }
            )
        return await self._stream(request, body["n_predict"], words, reply.stall_after, timings)

    async def _stream(
        self, request: web.Request, n_predict: int, words: list[str], stall_after: int | None, timings: dict[str, Any]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        sent = 0
        for i, word in enumerate(words):
            if stall_after is not None and i == stall_after:
                while request.transport is not None and not request.transport.is_closing():
                    await asyncio.sleep(0.01)
                return response
            word = word[: n_predict - sent]
            sent += len(word)
            event = {"content": word, "tokens": [ord(c) for c in word], "stop": False, "timings": timings}
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            if sent >= n_predict:
                break
        await response.write(b"data: " + json.dumps({"content": "", "tokens": [], "stop": True}).encode() + b"\n\n")
        return response

    @staticmethod
    def _reply(text: str) -> tuple[Reply, bool]:
        start = text.rfind(f"{IM_START}user\n") + len(f"{IM_START}user\n")
        user = text[start : text.find(IM_END, start)]
        return REPLIES.get(user, Reply("I do not know.")), text.startswith(f"{IM_START}system\n ")


def _log(p: float) -> float:
    return math.log(max(p, 1e-12))


async def until(condition: Callable[[], bool]) -> None:
    """Wait for `condition` (checked every few ms; the script's step timeout bounds it)."""
    while not condition():
        await asyncio.sleep(0.005)


async def warmed_up(llm: LlamaServerLLMService) -> None:
    """Until the service's warm-up at pipeline start has run, so every script begins the same way."""
    await until(lambda: llm._warming is not None)
    await llm.prefilled()


def answered(context: LLMContext) -> bool:
    """The context ends with a reply in words (a call's message is not one)."""
    last = context.messages[-1]
    return last["role"] == "assistant" and not last.get("tool_calls")


class Conversation:
    """One scripted conversation: the service, its context and the steps that drive it."""

    def __init__(self, url: str, tools: list[FunctionSchema] | None = None, **service: Any) -> None:
        self.context = LLMContext(tools=ToolsSchema(standard_tools=tools)) if tools else LLMContext()
        settings = LLMSettings(
            system_instruction=SYSTEM, temperature=0.0, seed=1, max_tokens=service.pop("max_tokens", 80)
        )
        segments = service.pop("interleave", None)
        self.interleaver = Interleaver() if segments is not None else None
        self.llm = LlamaServerLLMService(
            base_url=url,
            interleaving=Interleaving(self.interleaver, **segments) if self.interleaver else None,
            warm_context=self.context,
            settings=settings,
            **service,
        )
        self.ends = Watch(LLMFullResponseEndFrame)
        self.texts = Watch(LLMTextFrame)
        self.steps: list[Step] = [lambda: warmed_up(self.llm)]

    def turn(self, words: str) -> Conversation:
        """The user says `words`; the step after waits until the reply (and any call's answer) is in the context."""

        async def say() -> None:
            self.context.add_message({"role": "user", "content": words})

        self.steps += [say, LLMContextFrame(self.context), lambda: until(lambda: answered(self.context))]
        return self

    async def run(self, *, aggregate: bool = True) -> None:
        marks = [AnswerMarks(self.interleaver)] if self.interleaver else []
        aggregator = [LLMAssistantAggregator(self.context)] if aggregate else []
        await run_script(self.llm, *marks, self.texts, self.ends, *aggregator, steps=self.steps)
        await self.llm.backend.close()
