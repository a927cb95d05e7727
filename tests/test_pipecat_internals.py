"""Pipecat's private members: the few `pipecat_services/pipecat_internals.py` relies on are still there,
and no other code uses one, so a Pipecat upgrade that changes them fails here, not silently in a call."""

from __future__ import annotations

import ast
import asyncio
import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pipecat
import pytest
from pipecat.frames.frames import StartFrame
from pipecat.observers.base_observer import FramePushed
from pipecat.observers.turn_tracking_observer import TurnTrackingObserver
from pipecat.observers.user_bot_latency_observer import UserBotLatencyObserver
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregator, LLMUserAggregatorParams
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.turns.user_idle_controller import UserIdleController
from pipecat.utils.tracing.turn_trace_observer import TurnTraceObserver

from pipecat_services import pipecat_internals

REPO = Path(__file__).resolve().parents[1]
ADAPTER = Path(pipecat_internals.__file__).resolve()
PIPECAT = Path(pipecat.__file__).resolve().parent
ADAPTER_NEEDS = {"_current_span", "_user_idle_controller"}
"""The private members `pipecat_internals.py` uses; each has its check below."""

SUBCLASS_HOOKS = {
    "_settings": ("pipecat.services.ai_service.AIService", "Pipecat's Settings convention for every service"),
    "_register_event_handler": ("pipecat.utils.base_object.BaseObject", "the only way to declare an event"),
    "_call_event_handler": ("pipecat.utils.base_object.BaseObject", "the only way to emit one"),
    "_connect_websocket": ("pipecat.services.websocket_service.WebsocketService", "abstract: subclasses implement"),
    "_disconnect_websocket": ("pipecat.services.websocket_service.WebsocketService", "abstract: subclasses implement"),
    "_receive_messages": ("pipecat.services.websocket_service.WebsocketService", "abstract: subclasses implement"),
    "_connect": ("pipecat.services.websocket_service.WebsocketService", "documented: override, super() first"),
    "_disconnect": ("pipecat.services.websocket_service.WebsocketService", "documented: override, super() first"),
    "_websocket": ("pipecat.services.websocket_service.WebsocketService", "the connection its subclasses open and use"),
    "_websocket_connect": ("pipecat.services.websocket_service.WebsocketService", "opens one with its timeouts"),
    "_receive_task_handler": ("pipecat.services.websocket_service.WebsocketService", "its receive loop, reconnecting"),
    "_try_reconnect": (
        "pipecat.services.websocket_service.WebsocketService",
        "overridden: tries span a server wait",
    ),
    "_report_error": ("pipecat.services.stt_service.WebsocketSTTService", "the error callback the receive loop takes"),
    "_user_id": ("pipecat.services.stt_service.STTService", "the user a transcription belongs to"),
    "_push_llm_text": ("pipecat.services.llm_service.LLMService", "its helper for LLM implementations to push text"),
    "_process_context": ("pipecat.services.openai.base_llm.BaseOpenAILLMService", "where a context is answered"),
}
"""Pipecat private members that Pipecat documents as its subclasses' own to use, on `self` or
`super()` only: name -> (the Pipecat class that defines it, why it is allowed)."""


def is_private(name: str) -> bool:
    """One leading underscore: `__dunder__` and name-mangled `__x` are neither Pipecat's nor ours to share."""
    return name.startswith("_") and not name.startswith("__")


def is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def is_super(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def class_privates(node: ast.ClassDef) -> set[str]:
    """The private names a class defines: its methods and class attributes, and what it assigns to `self`."""
    names = set()
    for item in node.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(item.name)
        elif isinstance(item, ast.Assign | ast.AnnAssign):
            targets = item.targets if isinstance(item, ast.Assign) else [item.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store) and is_self(sub.value):
            names.add(sub.attr)
    return {name for name in names if is_private(name)}


@cache
def pipecat_privates() -> dict[tuple[str, str], set[str]]:
    """Each class's private names in the installed Pipecat, by (module, class)."""
    privates = {}
    for path in PIPECAT.rglob("*.py"):
        parts = path.relative_to(PIPECAT.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                privates.setdefault((module, node.name), set()).update(class_privates(node))
    return privates


def pipecat_class(path: str) -> type | None:
    """The Pipecat class that a dotted import path names, or None where it names none."""
    module, _, name = path.rpartition(".")
    while module.startswith("pipecat"):
        try:
            target = getattr(importlib.import_module(module), name)
            return target if isinstance(target, type) else None
        except (ImportError, AttributeError):
            module, _, outer = module.rpartition(".")
            name = f"{outer}.{name}"
    return None


def inherited_privates(cls: type) -> set[str]:
    """The private names that Pipecat's classes among `cls`'s ancestors define."""
    privates = pipecat_privates()
    return set().union(*(privates.get((k.__module__, k.__qualname__), set()) for k in cls.__mro__))


@dataclass
class OurClass:
    """A class of ours: the private names it defines, those its ancestors of ours define, and those it
    inherits from Pipecat (directly or through ours)."""

    node: ast.ClassDef
    imports: dict[str, str]
    own: set[str]
    ours_above: set[str] = field(default_factory=set)
    pipecats: set[str] = field(default_factory=set)


def imported_names(tree: ast.Module) -> dict[str, str]:
    """A module's imported names, each with the dotted path it imports."""
    names = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
        elif isinstance(node, ast.Import):
            names.update({a.asname or a.name.split(".")[0]: a.name for a in node.names})
    return names


def dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (base := dotted(node.value)):
        return f"{base}.{node.attr}"
    return None


def our_classes(trees: dict[Path, ast.Module]) -> dict[ast.ClassDef, OurClass]:
    """Our classes, with their bases resolved: Pipecat's by import, ours by name."""
    classes: dict[ast.ClassDef, OurClass] = {}
    by_name: dict[str, list[OurClass]] = {}
    for tree in trees.values():
        imports = imported_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                classes[node] = ours = OurClass(node, imports, class_privates(node))
                by_name.setdefault(node.name, []).append(ours)
    resolved: set[ast.ClassDef] = set()

    def resolve(ours: OurClass) -> None:
        if ours.node in resolved:
            return
        resolved.add(ours.node)
        for base in filter(None, map(dotted, ours.node.bases)):
            head, _, rest = base.partition(".")
            path = ours.imports.get(head, head) + (f".{rest}" if rest else "")
            if (cls := pipecat_class(path)) is not None:
                ours.pipecats |= inherited_privates(cls)
            for parent in by_name.get(path.rpartition(".")[2], []):
                resolve(parent)
                ours.ours_above |= parent.own | parent.ours_above
                ours.pipecats |= parent.pipecats

    for ours in classes.values():
        resolve(ours)
    return classes


@dataclass(frozen=True)
class Use:
    """A use of a Pipecat private member: where, which, and the code that uses it."""

    file: str
    line: int
    name: str
    code: str


def private_uses(file: str, tree: ast.Module, classes: dict[ast.ClassDef, OurClass]) -> Iterator[Use]:
    """A file's uses of Pipecat private members: `x._name` (and `getattr(x, "_name")`), and overrides.

    `self._name` is ours where our class (or an ancestor of ours) defines it and no Pipecat ancestor
    does: a name both define is Pipecat's, written over. Another object's `x._name` is Pipecat's unless
    the name is one of our classes' own."""
    pipecat_names = set().union(*pipecat_privates().values())
    ours_anywhere = set().union(*(c.own - c.pipecats for c in classes.values()))

    def verdict(receiver: ast.expr, name: str, ours: OurClass | None) -> bool:
        if not is_private(name) or name not in pipecat_names:
            return False
        if ours is not None and is_self(receiver):
            return name not in SUBCLASS_HOOKS and (name in ours.pipecats or name not in ours.own | ours.ours_above)
        if ours is not None and is_super(receiver):
            return name not in SUBCLASS_HOOKS and (name in ours.pipecats or name not in ours.ours_above)
        return name not in ours_anywhere

    def visit(node: ast.AST, ours: OurClass | None) -> Iterator[Use]:
        if isinstance(node, ast.ClassDef):
            ours = classes[node]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and ours is not None:
            if is_private(node.name) and node.name in ours.pipecats and node.name not in SUBCLASS_HOOKS:
                yield Use(file, node.lineno, node.name, f"def {node.name}")
        elif isinstance(node, ast.Attribute) and verdict(node.value, node.attr, ours):
            yield Use(file, node.lineno, node.attr, ast.unparse(node))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(name := node.args[1], ast.Constant)
            and isinstance(name.value, str)
            and verdict(node.args[0], name.value, ours)
        ):
            yield Use(file, node.lineno, name.value, ast.unparse(node))
        for child in ast.iter_child_nodes(node):
            yield from visit(child, ours)

    yield from visit(tree, None)


@cache
def uses_outside_the_adapter() -> list[Use]:
    paths = [
        p for p in sorted(REPO.rglob("*.py")) if not any(part.startswith(".") for part in p.relative_to(REPO).parts)
    ]
    trees = {path: ast.parse(path.read_text(), str(path)) for path in paths}
    classes = our_classes(trees)
    return [
        use
        for path, tree in trees.items()
        if path.resolve() != ADAPTER
        for use in private_uses(path.relative_to(REPO).as_posix(), tree, classes)
    ]


def test_the_adapter_uses_only_the_private_members_checked_here() -> None:
    tree = ast.parse(ADAPTER.read_text())
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and is_private(n.attr)}
    assert used == ADAPTER_NEEDS, "pipecat_internals.py changed: update ADAPTER_NEEDS and its checks here"


async def test_turn_trace_observer_keeps_the_open_turn_span_in_current_span() -> None:
    message = "Pipecat changed TurnTraceObserver._current_span: update pipecat_services/pipecat_internals.py"
    turns = TurnTrackingObserver()
    observer = TurnTraceObserver(turns, UserBotLatencyObserver())
    assert "_current_span" in vars(observer), message
    assert pipecat_internals.open_turn_span(observer) is None, message

    start = FramePushed(FrameProcessor(), FrameProcessor(), StartFrame(), FrameDirection.DOWNSTREAM, 0)
    await observer.on_push_frame(start)
    await turns.on_push_frame(start)
    async with asyncio.timeout(5):  # the tracker's event handlers run as tasks
        while observer.get_current_turn_context() is None:
            await asyncio.sleep(0.005)
    span = pipecat_internals.open_turn_span(observer)
    assert span is not None and span.get_span_context() == observer.get_current_turn_context(), message


async def test_the_user_aggregator_keeps_its_idle_controller() -> None:
    message = "Pipecat changed LLMUserAggregator._user_idle_controller: update pipecat_internals.py"
    aggregator = LLMUserAggregator(LLMContext(), params=LLMUserAggregatorParams(user_idle_timeout=5))
    controller = vars(aggregator).get("_user_idle_controller")
    assert isinstance(controller, UserIdleController), message
    assert callable(getattr(controller, "wait_for_user", None)), message


@pytest.mark.parametrize("name", sorted(SUBCLASS_HOOKS))
def test_the_subclass_hooks_allowed_are_still_pipecats(name: str) -> None:
    path, _ = SUBCLASS_HOOKS[name]
    cls = pipecat_class(path)
    assert cls is not None and name in inherited_privates(cls), (
        f"Pipecat changed {path}.{name}: update SUBCLASS_HOOKS and the services that use it"
    )


def test_no_code_but_the_adapter_uses_a_pipecat_private_member() -> None:
    uses = uses_outside_the_adapter()
    assert not uses, "Pipecat private members used outside pipecat_services/pipecat_internals.py:\n" + "\n".join(
        f"{u.file}:{u.line}: {u.code}" for u in uses
    )
