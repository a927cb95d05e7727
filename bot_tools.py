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

then run the bot with `--tools time,end_call,weather`. Tools from MCP servers come with `--mcp FILE`
(`pipecat_services/mcp_tools.py`). This is Pipecat's standard function-calling
API: the same schemas and handlers work with `OpenAILLMService`. The LLM service renders the
tools with the model's own chat template, checks the arguments against `properties`, and gives the
result back to the model, which then speaks the answer.
"""

from __future__ import annotations

from datetime import datetime

from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.frames.frames import FunctionCallResultProperties, TTSSpeakFrame
from pipecat.services.llm_service import FunctionCallParams

from pipecat_services.call_ending import is_farewell, last_user_words
from pipecat_services.spoken_phrases import GOODBYE


def current_time() -> dict[str, str | None]:
    """The machine's local date and time, so "What time is it?" gets a true answer."""
    now = datetime.now().astimezone()
    return {
        "time": now.strftime("%H:%M"),
        "weekday": now.strftime("%A"),
        "date": now.strftime("%B %d, %Y"),
        "timezone": now.tzname(),
    }


async def get_current_time(params: FunctionCallParams) -> None:
    await params.result_callback(current_time())


async def end_call(params: FunctionCallParams) -> None:
    """Say goodbye if the user's last words are a farewell (`CallEnder` then ends the call
    after it), else tell the model so: it answers them instead."""
    if not is_farewell(last_user_words(params.context.get_messages())):
        await params.result_callback({"error": "the user did not say goodbye: do not end the call, answer them"})
        return
    await params.result_callback({"ok": True}, properties=FunctionCallResultProperties(run_llm=False))
    await params.llm.push_frame(TTSSpeakFrame(GOODBYE))


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


def bot_tools(names: list[str]) -> list[FunctionSchema]:
    """The tools called `names` (keys of `TOOLS`)."""
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise ValueError(f"unknown tools {unknown}; have {sorted(TOOLS)}")
    return [TOOLS[n] for n in names]
