"""Tool calling on the llama-server path: the reading and checking of calls (unit), then Pipecat's
function-calling API through `LlamaServerLLMService` against a real llama-server running the
packaged Qwen2.5 1.5B."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    FunctionCallCancelFrame,
    FunctionCallInProgressFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMTextFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator
from pipecat.services.llm_service import FunctionCallParams
from pipecat.services.settings import LLMSettings

from benchmarks.llm import AnswerMarks
from benchmarks.scripted import TurnRecorder, Watch, run_script
from benchmarks.tools import EARLIER, states_result
from bot_config import BotConfig
from pipecat_services.interleaving import Interleaver
from pipecat_services.llm import tool_calls, tool_policy
from pipecat_services.llm.filler import CallFiller, without_fillers
from pipecat_services.llm.generation import Interleaving, ServerSpeed
from pipecat_services.llm.llama_server.service import LlamaServerLLMService
from pipecat_services.llm.tool_policy import with_text_results, without_earlier_calls
from pipecat_services.spoken_phrases import FILLERS, VariedPhrases

TIMER = {
    "name": "set_timer",
    "description": "Start a countdown timer.",
    "parameters": {"type": "object", "properties": {"minutes": {"type": "integer"}}, "required": ["minutes"]},
}
MARKUP = re.compile(r"[<>{}`]|tool_call|set_timer|get_weather|\w+_\w+")


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "set_timer", "arguments": {"minutes": 10}}\n</tool_call>',
        '{{"name": "set_timer", "arguments": {"minutes": 10}}}',
        '```json\n{\n  "name": "set_timer",\n  "arguments": {\n    "minutes": 10\n  }\n}\n```',
        "<tool_call>\n<function=set_timer>\n<parameter=minutes>\n10\n</parameter>\n</function>\n</tool_call>",
        "<tool_call><function=set_timer><parameter=minutes>10</function></tool_call>",
        '{"name": "set_timer", "arguments": "{\\"minutes\\": 10}"}',
    ],
)
def test_reads_every_form_small_models_write(text):
    speech, calls = tool_calls.parse(text)
    assert speech == "" and calls == [tool_calls.ParsedCall("set_timer", {"minutes": 10})]


def test_speech_before_a_call_stays_and_text_that_only_looks_like_one_is_speech():
    speech, calls = tool_calls.parse('Sure, one moment. <tool_call>{"name": "set_timer", "arguments": {}}</tool_call>')
    assert speech == "Sure, one moment. " and [c.name for c in calls] == ["set_timer"]
    assert tool_calls.parse("Use {curly} braces, or <angle> ones.") == ("Use {curly} braces, or <angle> ones.", [])
    assert tool_calls.call_start("It is 5 o'clock") == len("It is 5 o'clock")
    assert tool_calls.call_start("Okay. get_weather") == len("Okay. ")


def test_calls_are_checked_against_their_schemas():
    declared = {"set_timer": TIMER}
    assert tool_calls.check(tool_calls.ParsedCall("ring_bell", {}), declared).error
    assert "minutes" in tool_calls.check(tool_calls.ParsedCall("set_timer", {"minutes": "ten"}), declared).error
    assert tool_calls.check(tool_calls.ParsedCall("set_timer", {}), declared).error
    copied_schema = {"minutes": 10, "type": "object", "properties": {}}
    assert tool_calls.check(tool_calls.ParsedCall("set_timer", copied_schema), declared) == tool_calls.ParsedCall(
        "set_timer", {"minutes": 10}
    )
    assert tool_calls.parse('{"name": "set_timer", "arguments": "{not json"}')[1][0].error


def test_first_token_probability_of_a_call_and_error_results():
    assert tool_policy.call_probability([("<", 0.3), ("{{", 0.2), ("The", 0.4), (" `", 0.05)]) == pytest.approx(0.55)
    assert tool_calls.is_error('{"error": "no such city"}') and not tool_calls.is_error('{"ok": true}')
    assert tool_calls.is_error('"{\\"error\\": \\"down\\"}"')
    assert not tool_calls.is_error("Done.")


class Tools:
    """Handlers that record what they were called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.cancelled = asyncio.Event()

    async def weather(self, params: FunctionCallParams) -> None:
        self.calls.append((params.function_name, dict(params.arguments)))
        await params.result_callback({"city": params.arguments.get("city"), "temperature_c": 23, "sky": "clear"})

    async def timer(self, params: FunctionCallParams) -> None:
        self.calls.append((params.function_name, dict(params.arguments)))
        await params.result_callback({"ok": True, "minutes": params.arguments["minutes"]})

    async def broken(self, params: FunctionCallParams) -> None:
        self.calls.append((params.function_name, dict(params.arguments)))
        raise RuntimeError("the timer service is down")

    async def hang(self, params: FunctionCallParams) -> None:
        self.calls.append((params.function_name, dict(params.arguments)))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


def weather_schema(handler) -> FunctionSchema:
    return FunctionSchema(
        name="get_weather",
        description="Get the current weather in a city.",
        properties={"city": {"type": "string"}},
        required=["city"],
        handler=handler,
    )


def timer_schema(handler, maximum: int | None = None) -> FunctionSchema:
    minutes: dict[str, Any] = {"type": "integer", "description": "length in minutes"}
    if maximum is not None:
        minutes["maximum"] = maximum
    return FunctionSchema(
        name="set_timer",
        description="Start a countdown timer.",
        properties={"minutes": minutes},
        required=["minutes"],
        handler=handler,
    )


async def converse(url: str, request: str, *schemas: FunctionSchema, interleave: str = "off", context=None):
    """One user turn through the LLM service and Pipecat's assistant aggregator; returns the
    recorder (call, spoken text), every frame that came out, the context and the service."""
    context = context or LLMContext(tools=ToolsSchema(standard_tools=list(schemas)))
    context.add_message({"role": "user", "content": request})
    interleaver = Interleaver() if interleave != "off" else None
    llm = LlamaServerLLMService(
        base_url=url,
        interleaving=Interleaving(interleaver, waiting_segments=1 if interleave == "first" else None)
        if interleaver
        else None,
        warm_context=context,
        settings=LLMSettings(system_instruction=BotConfig().full_system_prompt, temperature=0.0, max_tokens=60),
    )
    recorder = TurnRecorder(llm)
    marks = [AnswerMarks(interleaver)] if interleaver else []
    down = await run_script(
        llm, *marks, recorder, LLMAssistantAggregator(context), steps=[LLMContextFrame(context), recorder.done.wait]
    )
    await llm.backend.close()
    return recorder, down, context, llm


def spoken(down) -> list[str]:
    return [f.text for f in down if isinstance(f, LLMTextFrame)]


@pytest.mark.parametrize("interleave", ["off", "first", "all"])
async def test_a_tool_is_called_and_its_result_is_spoken(tool_llm_server, interleave):
    tools = Tools()
    recorder, down, _, _ = await converse(
        tool_llm_server.http_url,
        "What's the weather like in Paris?",
        weather_schema(tools.weather),
        timer_schema(tools.timer),
        interleave=interleave,
    )
    assert tools.calls == [("get_weather", {"city": "Paris"})]
    assert re.search(r"\b23\b|twenty-three", recorder.text), recorder.text
    assert not [t for t in spoken(down) if MARKUP.search(t)], spoken(down)


async def test_questions_without_a_tool_make_no_call(tool_llm_server):
    tools = Tools()
    for question in ("Why is the sky blue?", "Who wrote Romeo and Juliet?"):
        recorder, down, _, _ = await converse(
            tool_llm_server.http_url, question, weather_schema(tools.weather), timer_schema(tools.timer)
        )
        assert recorder.call is None and recorder.text, (question, recorder.text)
        assert not [t for t in spoken(down) if MARKUP.search(t)], spoken(down)
    assert tools.calls == []


async def test_the_cache_is_reused_on_the_turn_after_a_call(tool_llm_server):
    tools = Tools()
    _, _, context, _ = await converse(
        tool_llm_server.http_url, "Set a timer for ten minutes.", timer_schema(tools.timer)
    )
    recorder, _, _, llm = await converse(tool_llm_server.http_url, "Thanks! Why is the sky blue?", context=context)
    assert tools.calls == [("set_timer", {"minutes": 10})] and recorder.call is None
    assert llm.last_reply.cache_hit_ratio >= 0.95, llm.last_reply


@pytest.mark.parametrize("failure", ["bad_arguments", "raising_handler", "no_handler"])
async def test_a_call_that_fails_ends_in_words_not_a_crash(tool_llm_server, failure):
    tools = Tools()
    schema = {
        "bad_arguments": timer_schema(tools.timer, maximum=5),
        "raising_handler": timer_schema(tools.broken),
        "no_handler": timer_schema(None),
    }[failure]
    recorder, down, context, _ = await converse(tool_llm_server.http_url, "Set a timer for ten minutes.", schema)
    results = [m["content"] for m in context.messages if m["role"] == "tool"]
    assert results and all(tool_calls.is_error(r) for r in results), results
    assert recorder.text and not [t for t in spoken(down) if MARKUP.search(t)], spoken(down)
    if failure == "bad_arguments":
        assert tools.calls == [], "a handler ran with arguments that break its schema"
    assert len(results) <= 2, "more than one retry"


async def test_an_interruption_cancels_a_running_call(tool_llm_server):
    tools = Tools()
    context = LLMContext(tools=ToolsSchema(standard_tools=[timer_schema(tools.hang)]))
    context.add_message({"role": "user", "content": "Set a timer for ten minutes."})
    llm = LlamaServerLLMService(
        base_url=tool_llm_server.http_url, warm_context=context, settings=LLMSettings(temperature=0.0, max_tokens=60)
    )
    running, cancels = Watch(FunctionCallInProgressFrame), Watch(FunctionCallCancelFrame)
    await run_script(
        llm,
        running,
        cancels,
        LLMAssistantAggregator(context),
        steps=[
            LLMContextFrame(context),
            lambda: running.reached(1),
            InterruptionFrame(),
            lambda: asyncio.wait_for(tools.cancelled.wait(), 10),
        ],
    )
    await llm.backend.close()
    assert tools.calls and tools.cancelled.is_set()
    assert cancels.count.value == 1


def test_calls_of_earlier_turns_leave_the_prompt_but_not_the_current_turns():
    call = {
        "role": "assistant",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_current_time", "arguments": "{}"}}],
    }
    result = {"role": "tool", "tool_call_id": "c1", "content": '{"time": "13:05"}'}
    earlier = [
        {"role": "user", "content": "What time is it?"},
        call,
        result,
        {"role": "assistant", "content": "It is 13:05."},
    ]
    current = [{"role": "user", "content": "And the date?"}, call, result]
    assert without_earlier_calls(earlier + current) == [earlier[0], earlier[3], *current]


def test_a_text_result_reaches_the_model_as_text_not_as_a_quoted_json_string():
    """Pipecat stores `json.dumps(result)`: an MCP tool's text result would reach the model escaped."""
    text = '{"city": "Paris", "conditions": "light rain"}'
    messages = [
        {"role": "user", "content": '"Quoted," she said.'},
        {"role": "tool", "tool_call_id": "c1", "content": json.dumps(text)},
        {"role": "tool", "tool_call_id": "c2", "content": json.dumps({"time": "13:05"})},
    ]
    assert with_text_results(messages) == [messages[0], {**messages[1], "content": text}, messages[2]]


def test_a_request_is_judged_alone_only_when_it_opens_a_later_turn():
    system = {"role": "system", "content": "Be brief."}
    first, answer = {"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."}
    request = {"role": "user", "content": "What time is it?"}
    assert tool_policy.last_request_alone([system, request]) is None  # the first request: judged as it is
    alone = tool_policy.last_request_alone([system, first, answer, request])
    assert alone == [{"role": "system", "content": tool_policy.ALONE_PREAMBLE + "Be brief."}, request]
    result = {"role": "tool", "tool_call_id": "c1", "content": '{"error": "down"}'}
    assert tool_policy.last_request_alone([system, first, answer, request, result]) is None  # a retry
    assert tool_policy.last_request_alone([first, answer, request])[0]["content"] == tool_policy.ALONE_PREAMBLE


def spoken_exchanges(*schemas: FunctionSchema) -> LLMContext:
    """A conversation of two questions answered in words, as before a tool request in a real call."""
    context = LLMContext(tools=ToolsSchema(standard_tools=list(schemas)))
    for question, answer in EARLIER[:2]:
        context.add_message({"role": "user", "content": question})
        context.add_message({"role": "assistant", "content": answer})
    return context


async def test_tools_are_called_after_answers_spoken_in_words(tool_llm_server):
    """After two spoken answers the 1.5B puts ≈0.001-0.05 on opening a call for a tool request (and
    answered "What time is it?" with an invented time); judged alone, the request is a call again."""
    tools = Tools()
    schemas = weather_schema(tools.weather), timer_schema(tools.timer)
    recorder, _, _, _ = await converse(
        tool_llm_server.http_url, "What's the weather like in Paris?", context=spoken_exchanges(*schemas)
    )
    assert tools.calls == [("get_weather", {"city": "Paris"})], recorder.text
    recorder, _, _, _ = await converse(
        tool_llm_server.http_url, "Why is the sky blue?", context=spoken_exchanges(*schemas)
    )
    assert recorder.call is None and recorder.text and len(tools.calls) == 1, recorder.text


async def test_a_request_judged_alone_leaves_the_conversation_cached(tool_llm_server):
    """The judgment shares no prefix with the conversation, so llama-server keeps both: the
    conversation's next request evaluates one token, not the conversation again."""
    context = spoken_exchanges(weather_schema(None))
    context.add_message({"role": "user", "content": "Is it cold in Oslo?"})
    llm = LlamaServerLLMService(
        base_url=tool_llm_server.http_url, settings=LLMSettings(system_instruction=BotConfig().full_system_prompt)
    )
    invocation = await llm.prompts.invocation(context)
    backend, speech = llm.backend, llm.backend.speech_fields()
    conversation = await llm.prompts.side_tokens(invocation.messages, invocation.tools)
    await backend.first_token(conversation, speech)
    alone = tool_policy.last_request_alone(invocation.messages)
    await backend.first_token(await llm.prompts.side_tokens(alone, invocation.tools), speech)
    again = await backend.first_token(conversation, speech)
    await backend.close()
    assert again.piece.timings["prompt_n"] <= 1 and again.piece.timings["cache_n"] >= len(conversation) - 1


FAREWELLS = [
    "Thanks, goodbye!",
    "Okay, I'm done, you can hang up now.",
    "Good night!",
    "Goodnight",
    "see ya later",
    "Bye-bye",
    "cheers, bye",
    "Goodbye, that's all for today.",
    "Thanks, that is all.",
    "That’s all, thanks",
    "Take care",
    "Nothing else, thanks.",
    "I have to go, bye.",
    "End call",
]
NOT_FAREWELLS = [
    "Good morning!",
    "Hello there.",
    "What time is it?",
    "Don't hang up, I have another question.",
    "How do I say bye in French?",
    "I'm done with the first part, next question.",
    "That's all I know about it, what do you think?",
    "I have to go to the store, what's open now?",
    "Remind me what the farewell tour was.",
    "standby mode please",
]


def test_farewells_are_told_from_greetings_questions_and_negations():
    from pipecat_services.call_ending import is_farewell

    assert [s for s in FAREWELLS if not is_farewell(s)] == []
    assert [s for s in NOT_FAREWELLS if is_farewell(s)] == []


@pytest.mark.parametrize(
    ("said", "ends"),
    [
        ("Thanks, goodbye!", True),
        ("Okay, I'm done, you can hang up now.", True),
        ("Good morning!", False),
        ("Don't hang up, I have another question.", False),
    ],  # fmt: skip
)
async def test_end_call_needs_the_users_own_farewell(said, ends):
    """The model may call end_call on a greeting (the 1.5B did on "Good morning!"); it says goodbye
    only if the user's last words are a farewell (`CallEnder` then ends the call), else the
    model gets an error and answers."""
    from bot_tools import end_call

    results, pushed = [], []
    context = LLMContext(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": said}])

    async def result_callback(result, properties=None):
        results.append(result)

    async def push_frame(frame, direction=None):
        pushed.append(type(frame).__name__)

    llm = type("Recorder", (), {"push_frame": staticmethod(push_frame)})()
    params = FunctionCallParams("end_call", "call-1", {}, llm, None, context, result_callback)
    await end_call(params)
    assert pushed == (["TTSSpeakFrame"] if ends else [])
    assert tool_calls.is_error(results[0]) is not ends


@pytest.mark.parametrize(
    ("speed", "said", "delay"),
    [
        (None, "What time is it?", 0.0),  # unknown: as slow
        (ServerSpeed(prompt_ms=20, decode_ms=90), "What time is it?", 0.0),  # 2 cores: the answer is seconds away
        (ServerSpeed(prompt_ms=0.5, decode_ms=5), "What time is it?", 1.0),  # a GPU: the answer comes first
        (ServerSpeed(prompt_ms=20, decode_ms=90), "Thanks, bye!", None),  # end_call says goodbye at once
    ],
)
def test_a_filler_starts_at_once_only_when_the_answer_is_further_away_than_it(speed, said, delay):
    assert CallFiller(wait_s=1.0).delay_s([{"role": "user", "content": said}], speed) == delay


def test_fillers_vary_and_stay_out_of_the_models_prompt():
    phrases = VariedPhrases(FILLERS)
    picked = [phrases.next() for _ in range(50)]
    assert all(a != b for a, b in zip(picked, picked[1:], strict=False)) and len(set(picked)) > 2
    messages = [
        {"role": "user", "content": "What time is it?"},
        {"role": "assistant", "content": "Let me check."},
        {"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": "t", "arguments": "{}"}}]},
        {"role": "assistant", "content": "Let me check the weather for you."},
    ]
    assert without_fillers(messages) == [messages[0], messages[2], messages[3]]


@pytest.mark.parametrize(
    ("result", "request_", "reply", "states"),
    [
        ({"amount": 100, "converted": 91.7}, "How much is 100 dollars in euros?", "That is 91.70 euros.", True),
        ({"amount": 100, "converted": 91.7}, "How much is 100 dollars in euros?", "The price of AAPL is $100.", False),
        ('{"symbol": "AAPL", "price": 181.25}', "Apple's stock?", "Apple trades at about 181 dollars.", True),
        ({"time": "14:05"}, "What time is it?", "It's 2:05 in the afternoon.", True),
        ({"time": "14:05"}, "What time is it?", "It's 3:30.", False),
        ({"city": "Paris", "temperature_c": 18, "conditions": "rain"}, "Weather in Paris?", "Paris is nice.", False),
    ],
)
def test_the_tools_benchmark_scores_an_answer_by_the_result_it_states(result, request_, reply, states):
    assert states_result(result, request_, reply) is states


def test_calls_and_answers_from_a_result_are_sampled_greedily():
    """At the bot's 0.7 the 1.5B wrote the wrong function's name and answered a result with "Got it!"."""
    from pipecat_services.llm.llama_server.client import LlamaServerBackend
    from pipecat_services.llm.prompt import Invocation

    policy = tool_policy.ToolPolicy(LlamaServerBackend("http://127.0.0.1:1"))
    tools = [{"type": "function", "function": TIMER}]
    sampling = {"temperature": 0.7}
    request = {"role": "user", "content": "Set a timer for ten minutes."}
    call = {"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": "set_timer", "arguments": "{}"}}]}
    result = {"role": "tool", "tool_call_id": "1", "content": '{"ok": true}'}
    assert policy.plan(sampling, Invocation([request], tools)).fields["temperature"] == 0.7
    assert policy.call_fields(sampling, tools)["temperature"] == 0.0
    assert policy.plan(sampling, Invocation([request, call, result], tools)).fields["temperature"] == 0.0
