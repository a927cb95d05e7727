"""Tool calls in the text a small local LLM writes: where a call may start, how to read it, and the
grammar that keeps it well formed.

Small models know *what* to call but not always *how* to write it. The packaged Qwen2.5 copies its
template's example with doubled braces (`{{"name": ...}}`) or wraps the JSON in a ```json fence
instead of `<tool_call>` tags; Nemotron 3 Nano writes `<tool_call><function=NAME><parameter=K>V`.
So the reply streams as speech only up to the first character that could start a call
(`call_start`), everything from there is held back, and at the end of the reply `parse` reads
every form above. Whether a reply is a call at all is decided from the model's first-token
distribution (`call_probability`); a call is then held by a GBNF grammar (`CallGrammar`) to a
declared function with a JSON object of arguments, in any of the forms the model likes to begin, so
llama-server never fights the model over whitespace or fences (a grammar that does costs up to 10x
in decode speed). A speech reply gets `SPEECH_ONLY_GBNF`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import jsonschema

_MAY_START_CALL = re.compile(r"[<`{]|\b[A-Za-z0-9]+_")
"""Markup, or a snake_case word (a function's name, never speech)."""
_GRAMMAR_TRIGGER = r"<(?!\|)|```|\{"
"""Where the grammar wakes (ECMAScript regex, run by llama-server): not on the `<` of `<|im_end|>`."""
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


def call_probability(next_tokens: list[tuple[str, float]]) -> float:
    """How likely the model is to begin its reply with a call: the probability of the first tokens
    that open one (`<tool_call>`, `<`, ```` ``` ````, `{`), from its next-token distribution."""
    return sum(p for text, p in next_tokens if text.lstrip()[:1] in ("<", "`", "{"))


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


SPEECH_ONLY_GBNF = "root ::= [^<`{_]*"
"""A reply with no character that could start a call, nor a function's snake_case name."""
TRIGGER_PATTERN = 2
"""llama.cpp's COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN: a regex searched anywhere in the output."""
MAX_FAILED_CALLS = 2
"""Failed tool calls one user turn may make (a call and one retry); then the model must speak."""
CALL_THRESHOLD = 0.25
"""Measured on the packaged Qwen2.5 1.5B with the bot's prompt and tools: requests for a tool put
0.3-0.6 of the first token's probability on opening a call, other questions 0-0.18; with more tools
(`benchmarks.tools`) the ranges overlap (0.06-0.87 vs 0-0.28)."""
RECHECK_FLOOR = 0.0005
"""A first token at least this likely (and below `call_threshold`) to open a call, in a conversation
with earlier user turns, has the call judged again on the user's last words alone
(`last_request_alone`). After two or three answers spoken in words, the 1.5B puts 0.0002-0.44 on a
call for tool requests (0.3-0.8 as a first question) and 0-0.003 for other questions, so a threshold
on it alone either misses most requests or calls on chit-chat (`benchmarks.tools --history`)."""
NEXT_TOKENS = 100
"""How many of the most likely first tokens are asked for: enough to see a call as unlikely as
`RECHECK_FLOOR`, which is rarely among the top 10."""
ALONE_PREAMBLE = " "
"""Begins the system prompt of a request judged alone: a space, so the judgment's tokens differ from
the conversation's from the first one on and llama-server keeps each in a cache entry of its own
(its host-memory prompt cache, `--cache-ram`), instead of cutting the conversation back to the
shared system prompt and evaluating it all again on the next turn (seconds). Words would change the
judgment (measured alone on the 30 requests: no preamble 18/20 right, 0/10 false, farewells
0.12-0.33; a space 17/20, 0/10, 0.10-0.31; "One message from a longer call." 16/20, 0/10, 0.07-0.17)."""


def without_earlier_calls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages the model sees: tool calls and results of earlier user turns leave the prompt
    (their spoken answers stay). A small model that sees one call in its history calls a tool on
    every later turn (first-token call probability 0.4-0.99 for "How many legs does a spider have?"
    after one "What time is it?"). Costs one re-prefill of the tool turn's answer on the next turn."""
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=0)
    return [
        m
        for i, m in enumerate(messages)
        if i >= last_user or not (m["role"] == "tool" or (m["role"] == "assistant" and m.get("tool_calls")))
    ]


def last_request_alone(messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The user's last message after `alone_system_prompt`, for judging a call without the
    conversation; None unless the turn begins a new user request after earlier ones."""
    if sum(m["role"] == "user" for m in messages) < 2 or messages[-1]["role"] != "user":
        return None
    return [alone_system_prompt(messages), messages[-1]]


def alone_system_prompt(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The conversation's system message with `ALONE_PREAMBLE` before it."""
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    if not isinstance(system, str):  # content parts
        system = " ".join(part.get("text", "") for part in system)
    return {"role": "system", "content": ALONE_PREAMBLE + system}


def tool_names(tools: list[dict[str, Any]]) -> tuple[str, ...]:
    """The declared functions' names, from tools in OpenAI's format."""
    return tuple(t["function"]["name"] for t in tools)


def calls_allowed(messages: list[dict[str, Any]], tool_choice: Any) -> bool:
    """No call once one of this user turn has succeeded, after `MAX_FAILED_CALLS` failures, or
    with `tool_choice: none`."""
    since_user = next((i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "user"), -1)
    results = [m.get("content") for m in messages[since_user + 1 :] if m["role"] == "tool"]
    failed = sum(is_error(r) for r in results)
    return tool_choice != "none" and len(results) == failed and failed < MAX_FAILED_CALLS


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


_JSON_RULES = r"""
ws ::= [ \t\n]{0,16}
object ::= "{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value )* )? ws "}"
value ::= object | array | string | number | "true" | "false" | "null"
array ::= "[" ws ( value ( ws "," ws value )* )? ws "]"
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" ["\\/bfnrtu] )* "\""
number ::= "-"? [0-9]+ ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?
"""


@dataclass(frozen=True)
class CallGrammar:
    """llama-server's grammar for a call of one of `names`: forced (the reply is a call), or lazy
    (off while the model speaks, on from the first character that could open a call)."""

    names: tuple[str, ...]

    def lazy_fields(self) -> dict[str, Any]:
        """The `/completion` fields that let the model speak, and hold it to a well-formed call once
        it starts one."""
        return {
            "grammar": self.gbnf(),
            "grammar_lazy": True,
            "grammar_triggers": [{"type": TRIGGER_PATTERN, "value": _GRAMMAR_TRIGGER}],
        }

    def forced_fields(self) -> dict[str, Any]:
        """The `/completion` fields that make the reply a call and nothing else."""
        return {"grammar": self.gbnf()}

    def gbnf(self) -> str:
        names = " | ".join(json.dumps(json.dumps(n)) for n in self.names)
        xml_names = " | ".join(json.dumps(n) for n in self.names)
        return (
            'root ::= ( "<tool_call>" ws )? ( "```" [a-z]* ws )? ( json-call | xml-call ) ws ( "```" ws )? '
            '( "</tool_call>" )?\n'
            'json-call ::= "{" "{"? ws "\\"name\\"" ws ":" ws name ws "," ws '
            '"\\"arguments\\"" ws ":" ws object ws "}" "}"?\n'
            f"name ::= {names}\n"
            'xml-call ::= "<function=" xml-name ">" ws ( "<parameter=" [a-zA-Z0-9_]+ ">" [^<]* "</parameter>" ws )* '
            '"</function>"\n'
            f"xml-name ::= {xml_names}\n" + _JSON_RULES
        )
