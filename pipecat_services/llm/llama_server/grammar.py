"""llama.cpp GBNF grammars that keep a reply speech, or a call well formed.

A call is held to a declared function with a JSON object of arguments, in any of the forms the model
likes to begin (`<tool_call>` tags, `{{...}}`, a fence, Nemotron's `<function=...>` XML), so
llama-server never fights the model over whitespace or fences (a grammar that does costs up to 10x
in decode speed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

SPEECH_ONLY_GBNF = "root ::= [^<`{_]*"
"""A reply with no character that could start a call, nor a function's snake_case name."""
TRIGGER_PATTERN = 2
"""llama.cpp's COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN: a regex searched anywhere in the output."""
_GRAMMAR_TRIGGER = r"<(?!\|)|```|\{"
"""Where the grammar wakes (ECMAScript regex, run by llama-server): not on the `<` of `<|im_end|>`."""
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
