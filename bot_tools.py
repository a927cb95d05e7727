"""The bot's tools: what the agent can do besides talking. On by default; `--tools` / `BOT_TOOLS`
chooses them (`--tools none` turns them off).

Add your own in three steps:

    async def get_weather(params: FunctionCallParams) -> None:
        city = params.arguments["city"]
        await params.result_callback({"city": city, "forecast": await my_weather_api(city)})

    TOOLS["weather"] = FunctionSchema(
        name="get_weather", description="Get the current weather in a city",
        properties={"city": {"type": "string", "description": "the city's name"}}, required=["city"],
        handler=get_weather,
    )

then run the bot with `--tools time,end_call,weather`. This is Pipecat's standard function-calling
API: the same schemas and handlers work with `OpenAILLMService`. The LLM service renders the
tools with the model's own chat template, checks the arguments against `properties`, and gives the
result back to the model, which then speaks the answer.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import EndWorkerFrame, FunctionCallResultProperties, TTSSpeakFrame
from pipecat.processors.aggregators.llm_context import standard_message_text
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import FunctionCallParams

GOODBYE = "Goodbye, talk to you soon!"
_APOSTROPHE = "['’]"
_FAREWELL = re.compile(
    rf"\b(?:bye(?:[\s-]*bye)?|good[\s-]*bye|good[\s-]*night|farewell|take care|ttyl|hang up|nothing else"
    rf"|see (?:you|ya)(?: later| soon| tomorrow)?|(?:talk|speak|catch you) (?:to you )?(?:later|soon)"
    rf"|end (?:the |this )?call|that{_APOSTROPHE}?s (?:all|it|everything)|that is (?:all|it)"
    rf"|(?:i{_APOSTROPHE}?m|i am|we{_APOSTROPHE}?re|we are) done|(?:gotta|got to|have to|need to) go)\b",
    re.IGNORECASE,
)
_NEGATED = re.compile(rf"\b(?:don{_APOSTROPHE}?t|do not|never|not)\s+(?:\w+\s+){{0,2}}$", re.IGNORECASE)
_CLOSERS = re.compile(
    r"(?:[\s,]*(?:then|now|for now|for today|thanks|thank you|everyone|again|bye|(?:you can )?hang up"
    r"|(?:and )?have a (?:good|nice|great) (?:one|day|night|evening)))*[\s,]*",
    re.IGNORECASE,
)


def is_farewell(text: str) -> bool:
    """Whether the user's words end the conversation: a farewell phrase ("bye", "good night", "that's
    all", "hang up"...) that is not in a question, not negated ("don't hang up") and followed in its
    sentence by nothing but closers ("thanks", "for now", "have a good day"). A small model reads
    "Good morning!" as a goodbye (the 1.5B's first-token call probability was 0.38, above the 0.25
    threshold), so hanging up needs the user's own words to agree."""
    for sentence in re.findall(r"[^.!?]+[.!?]?", text):
        for match in _FAREWELL.finditer(sentence):
            rest = sentence[match.end() :].rstrip(".!?")
            if sentence.rstrip().endswith("?") or _NEGATED.search(sentence[: match.start()]):
                continue
            if _CLOSERS.fullmatch(rest):
                return True
    return False


def last_user_words(messages: list[Any]) -> str:
    """The text of the last user message (Pipecat's standard messages; provider-specific ones skipped)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return standard_message_text(message)
    return ""


async def get_current_time(params: FunctionCallParams) -> None:
    """The machine's local date and time, so "What time is it?" gets a true answer."""
    now = datetime.now().astimezone()
    await params.result_callback(
        {
            "time": now.strftime("%H:%M"),
            "weekday": now.strftime("%A"),
            "date": now.strftime("%B %d, %Y"),
            "timezone": now.tzname(),
        }
    )


async def end_call(params: FunctionCallParams) -> None:
    """Say goodbye, then end the session once the goodbye has played (the EndFrame follows it); only
    if the user's last words are a farewell, else the model is told so and answers them instead."""
    if not is_farewell(last_user_words(params.context.get_messages())):
        await params.result_callback({"error": "the user did not say goodbye: do not end the call, answer them"})
        return
    await params.result_callback({"ok": True}, properties=FunctionCallResultProperties(run_llm=False))
    await params.llm.push_frame(TTSSpeakFrame(GOODBYE))
    await params.llm.push_frame(EndWorkerFrame(reason="the user said goodbye"), FrameDirection.UPSTREAM)


TOOLS: dict[str, FunctionSchema] = {
    "time": FunctionSchema(
        name="get_current_time",
        description="Get the current local time, weekday and date.",
        properties={},
        required=[],
        handler=get_current_time,
    ),
    "end_call": FunctionSchema(
        name="end_call",
        description="End the call when the user says goodbye or that they are done. It says goodbye for you.",
        properties={},
        required=[],
        handler=end_call,
    ),
}


def bot_tools(names: list[str]) -> ToolsSchema | None:
    """The tools called `names` (keys of `TOOLS`); None for none."""
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise ValueError(f"unknown tools {unknown}; have {sorted(TOOLS)}")
    return ToolsSchema(standard_tools=[TOOLS[n] for n in names]) if names else None
