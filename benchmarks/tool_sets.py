"""The tools benchmark's tool sets, with canned results a real backend would give: declared in Python
(`benchmarks.tools`) and served by an MCP server (`benchmarks.mcp_server`), the same ones."""

from __future__ import annotations

from typing import Any

from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.services.llm_service import FunctionCallParams

from bot_tools import TOOLS, current_time

PRICES = {"AAPL": 181.25, "NVDA": 131.4, "MSFT": 412.6, "TSLA": 248.1}
WEATHER = {"paris": (18, "light rain"), "tokyo": (24, "sunny"), "berlin": (7, "cloudy"), "london": (12, "showers")}
RATES = {("USD", "EUR"): 0.917, ("GBP", "USD"): 1.268, ("USD", "JPY"): 151.3, ("EUR", "USD"): 1.09}


def canned_result(name: str, args: dict[str, Any]) -> Any:
    """What a real backend would answer, so the model has something to say."""
    if name == "get_current_time":
        return current_time()
    city = str(args.get("city", "")).lower()
    temperature, conditions = WEATHER.get(city, (15, "clear"))
    pair = (str(args.get("from_currency", "")).upper(), str(args.get("to_currency", "")).upper())
    amount = args.get("amount", 1)
    results = {
        "get_weather": {"city": args.get("city"), "temperature_c": temperature, "conditions": conditions},
        "get_stock_price": {"symbol": args.get("symbol"), "price": PRICES.get(str(args.get("symbol")), 100.5)},
        "set_timer": {"ok": True, "minutes": args.get("minutes")},
        "book_table": {"confirmed": True, "reference": "A12"},
        "convert_currency": {
            "amount": amount,
            "from": pair[0],
            "to": pair[1],
            "converted": round(float(amount) * RATES.get(pair, 1.1), 2) if isinstance(amount, int | float) else None,
        },
        "set_thermostat": {"ok": True, "temperature_c": args.get("temperature_c"), "reached_in_minutes": 12},
    }
    return results.get(name, {"ok": True})


async def canned(params: FunctionCallParams) -> None:
    await params.result_callback(canned_result(params.function_name, params.arguments))


def schema(name: str, description: str, properties: dict[str, Any], required: list[str]) -> FunctionSchema:
    return FunctionSchema(name=name, description=description, properties=properties, required=required, handler=canned)


BENCH_TOOLS = [
    FunctionSchema(
        name="get_current_time", description=TOOLS["time"].description, properties={}, required=[], handler=canned
    ),
    FunctionSchema(
        name="end_call", description=TOOLS["end_call"].description, properties={}, required=[], handler=canned
    ),
    schema(
        "get_weather",
        "Get the current weather in a city.",
        {"city": {"type": "string", "description": "city name"}},
        ["city"],
    ),
    schema(
        "get_stock_price",
        "Get the current stock price of a company.",
        {"symbol": {"type": "string", "description": "stock ticker symbol, e.g. AAPL"}},
        ["symbol"],
    ),
    schema(
        "set_timer",
        "Start a countdown timer.",
        {
            "minutes": {"type": "integer", "description": "length in minutes"},
            "label": {"type": "string", "description": "what the timer is for"},
        },
        ["minutes"],
    ),
    schema(
        "book_table",
        "Book a table at a restaurant.",
        {
            "restaurant": {"type": "string"},
            "people": {"type": "integer", "description": "number of guests"},
            "time": {"type": "string", "description": "when, as the user said it"},
        },
        ["restaurant", "people", "time"],
    ),
]

ANSWER_TOOLS = [
    *(t for t in BENCH_TOOLS if t.name in ("get_current_time", "end_call", "get_weather", "get_stock_price")),
    schema(
        "convert_currency",
        "Convert an amount of money from one currency to another at today's rate.",
        {
            "amount": {"type": "number"},
            "from_currency": {"type": "string", "description": "ISO code, e.g. USD"},
            "to_currency": {"type": "string", "description": "ISO code, e.g. EUR"},
        },
        ["amount", "from_currency", "to_currency"],
    ),
    schema(
        "set_thermostat",
        "Set the home thermostat to a temperature.",
        {
            "temperature_c": {"type": "number", "description": "degrees Celsius"},
            "room": {"type": "string"},
        },
        ["temperature_c"],
    ),
]
"""`--set answers`: tools the bot has never seen, whose results the answer must state."""
