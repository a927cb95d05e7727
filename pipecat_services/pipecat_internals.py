"""Every use of a Pipecat private member, each for want of a public way, in one place to check on an
upgrade: `tests/test_pipecat_internals.py` fails when the installed Pipecat no longer has one of them,
and when code outside this module uses any other."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.trace import Span
    from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregator
    from pipecat.utils.tracing.turn_trace_observer import TurnTraceObserver


def open_turn_span(observer: TurnTraceObserver) -> Span | None:
    """`TurnTraceObserver._current_span`: its public `get_current_turn_context()` gives the open turn's
    SpanContext only, which takes no attributes, and our latency numbers go on the turn span."""
    return observer._current_span


async def start_user_idle_timer(aggregator: LLMUserAggregator) -> None:
    """`LLMUserAggregator._user_idle_controller.wait_for_user()`: Pipecat starts the user-idle timer
    when the bot stops speaking, so a call whose user never speaks (the bot does not greet) would
    never time out; this starts it when the call does."""
    await aggregator._user_idle_controller.wait_for_user()
