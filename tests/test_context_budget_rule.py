"""The context budget's trimming rule (`context_budget.py`) on hand-written conversations."""

from pipecat_services.llm.context_budget import (
    ContextBudget,
    cut_points,
    estimate_tokens,
    trimmed,
)

SYSTEM = {"role": "system", "content": "Be brief."}


def turn(i: int, words: int = 40) -> list[dict]:
    return [
        {"role": "user", "content": f"Question {i}: " + "word " * words},
        {"role": "assistant", "content": f"Answer {i}: " + "word " * words},
    ]


def tool_turn(i: int) -> list[dict]:
    call = {"id": f"call{i}", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    return [
        {"role": "user", "content": f"What time is it? ({i})"},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": f"call{i}", "content": '{"time": "10:00"}'},
        {"role": "assistant", "content": "It is ten."},
    ]


def total(messages: list[dict]) -> int:
    return sum(estimate_tokens(m) for m in messages)


def test_a_prompt_that_fits_is_not_the_rule_s_business():
    budget = ContextBudget(window=1000, reply_tokens=200)
    assert budget.fits(800) and not budget.fits(801)
    assert budget.target == 400


def test_cuts_only_at_user_messages_after_the_system_prompt():
    messages = [SYSTEM, *turn(1), *turn(2), *turn(3)]
    assert cut_points(messages) == [3, 5]


def test_never_between_a_tool_call_and_its_result():
    messages = [SYSTEM, *turn(1), *tool_turn(2), *turn(3)]
    messages.insert(5, {"role": "user", "content": "(said while the call ran)"})
    points = cut_points(messages)
    assert 5 not in points, "a cut there would keep the result without its call"
    assert points == [3, 8]


def test_never_drops_a_call_still_running():
    running = tool_turn(2)
    running[2] = {**running[2], "content": "IN_PROGRESS"}
    messages = [SYSTEM, *turn(1), *running, *turn(3)]
    assert cut_points(messages) == [3]


def test_drops_the_oldest_turns_down_to_about_the_target():
    messages = [SYSTEM, *[m for i in range(20) for m in turn(i)]]
    budget = ContextBudget(window=total(messages), reply_tokens=100)
    kept = trimmed(messages, total(messages), budget)
    assert kept is not None and kept[0] is SYSTEM
    assert kept[1]["role"] == "user"
    assert kept[1:] == messages[len(messages) - len(kept) + 1 :], "the newest turns stay as they were"
    assert budget.target - estimate_tokens(turn(0)[0]) * 2 <= total(kept) <= budget.target + 10
    assert (len(kept) - 1) % 2 == 0, "whole turns leave"


def test_at_worst_only_the_current_turn_stays_and_then_nothing_more_can_leave():
    messages = [SYSTEM, *turn(1), {"role": "user", "content": "word " * 2000}]
    kept = trimmed(messages, 5000, ContextBudget(window=1000, reply_tokens=100))
    assert kept == [SYSTEM, messages[-1]]
    assert trimmed(kept, 5000, ContextBudget(window=1000, reply_tokens=100)) is None


def test_a_tool_turn_leaves_whole():
    messages = [*tool_turn(1), *turn(2), *turn(3)]
    kept = trimmed(messages, total(messages), ContextBudget(window=total(messages), reply_tokens=0, keep=0.6))
    assert kept is not None and not any(m["role"] == "tool" or m.get("tool_calls") for m in kept)
    assert kept[0]["role"] == "user" and kept == messages[-len(kept) :]
