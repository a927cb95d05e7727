"""Tool calls in the text a small local LLM writes: where a call may start, how to read it, whether
its arguments fit the schema.

Small models know *what* to call but not always *how* to write it. The packaged Qwen2.5 copies its
template's example with doubled braces (`{{"name": ...}}`) or wraps the JSON in a ```json fence
instead of `<tool_call>` tags; Nemotron 3 Nano writes `<tool_call><function=NAME><parameter=K>V`.
So the reply streams as speech only up to the first character that could start a call
(`call_start`), everything from there is held back, and at the end of the reply `parse` reads
every form above and `check` holds it to the declared schema. Whether a reply is a call at all is
`tool_policy.py`'s decision; the grammar that keeps a call well formed is the backend's
(`llama_server/grammar.py`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import jsonschema

_MAY_START_CALL = re.compile(r"[<`{]|\b[A-Za-z0-9]+_")
"""Markup, or a snake_case word (a function's name, never speech)."""
_XML_FUNCTION = re.compile(r"<function=([^>\s]+)>(.*?)(?:</function>|$)", re.S)
_XML_PARAMETER = re.compile(r"<parameter=([^>\s]+)>\s*(.*?)\s*(?=</parameter>|<parameter=|$)", re.S)


@dataclass(frozen=True)
class ParsedCall:
    """A call as the model wrote it; `error` says why it cannot run (bad arguments, unknown name)."""

    name: str
    arguments: dict[str, Any]
    error: str | None = None


def call_start(text: str) -> int:
    """Where a tool call may begin in `text` (its length when nothing there could start one)."""
    match = _MAY_START_CALL.search(text)
    return match.start() if match else len(text)


def parse(text: str) -> tuple[str, list[ParsedCall]]:
    """(speech, calls) of a whole reply. Text that only looked like a call stays speech."""
    start = call_start(text)
    speech, rest = text[:start], text[start:]
    calls = _xml_calls(rest) or _json_calls(rest)
    return (speech, calls) if calls else (text, [])


def _xml_calls(text: str) -> list[ParsedCall]:
    calls = []
    for function in _XML_FUNCTION.finditer(text):
        arguments = {name: _json_or_text(value) for name, value in _XML_PARAMETER.findall(function[2])}
        calls.append(ParsedCall(function[1], arguments))
    return calls


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _json_calls(text: str) -> list[ParsedCall]:
    """Every JSON object with a "name" in `text`, wherever it starts (so `{{...}}` and fences parse)."""
    decoder, calls, i = json.JSONDecoder(), [], 0
    while (i := text.find("{", i)) >= 0:
        try:
            value, end = decoder.raw_decode(text, i)
        except ValueError:
            i += 1
            continue
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            calls.append(_from_json(value))
            i = end
        else:
            i += 1
    return calls


def _from_json(value: dict[str, Any]) -> ParsedCall:
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return ParsedCall(value["name"], {}, f"arguments are not JSON: {arguments[:200]!r}")
    if not isinstance(arguments, dict):
        return ParsedCall(value["name"], {}, f"arguments must be a JSON object, not {arguments!r}")
    return ParsedCall(value["name"], arguments)


def check(call: ParsedCall, tools: dict[str, dict[str, Any]]) -> ParsedCall:
    """The call with `error` set if its function is not declared or its arguments break the schema.
    Arguments the schema does not name are dropped (small models copy the schema into them)."""
    if call.error:
        return call
    tool = tools.get(call.name)
    if tool is None:
        return ParsedCall(call.name, call.arguments, f"there is no function {call.name!r}; use one of {sorted(tools)}")
    schema = tool.get("parameters") or {"type": "object"}
    named = schema.get("properties")
    arguments = call.arguments if named is None else {k: v for k, v in call.arguments.items() if k in named}
    try:
        jsonschema.validate(arguments, schema)
    except jsonschema.ValidationError as e:
        where = ".".join(map(str, e.path)) or "arguments"
        return ParsedCall(call.name, arguments, f"bad arguments for {call.name}: {where}: {e.message}")
    return ParsedCall(call.name, arguments)


def tool_names(tools: list[dict[str, Any]]) -> tuple[str, ...]:
    """The declared functions' names, from tools in OpenAI's format."""
    return tuple(t["function"]["name"] for t in tools)


def is_error(result: Any) -> bool:
    """Whether a tool result (as the context holds it: JSON text, twice encoded when the handler
    answered a string) reports a failure: {"error": ...}."""
    for _ in range(2):
        if not isinstance(result, str):
            break
        try:
            result = json.loads(result)
        except ValueError:
            return False
    return isinstance(result, dict) and "error" in result
