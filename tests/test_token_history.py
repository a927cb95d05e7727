"""TokenHistory's prefix reuse, with a deterministic stand-in tokenizer (one token per character)."""

from pipecat_services.llm.token_history import TokenHistory


async def char_tokens(text: str) -> list[int]:
    return [ord(c) for c in text]


async def test_reuses_every_block_the_new_prompt_starts_with():
    history = TokenHistory()
    tokens, reused = await history.prompt("<sys>hi<user>Q1<asst>", char_tokens)
    assert reused == 0 and tokens == [ord(c) for c in "<sys>hi<user>Q1<asst>"]
    history.add_generated("Paris", [1001])
    history.add_generated(" is", [1002])
    history.add_generated(" nice.", [1003])
    tokens, reused = await history.prompt("<sys>hi<user>Q1<asst>Paris is nice.<end><user>Q2<asst>", char_tokens)
    assert reused == len("<sys>hi<user>Q1<asst>") + 3
    assert tokens[reused - 3 : reused] == [1001, 1002, 1003]
    assert tokens[reused:] == [ord(c) for c in "<end><user>Q2<asst>"]


async def test_an_interrupted_reply_keeps_only_the_spoken_blocks():
    history = TokenHistory()
    await history.prompt("<p>", char_tokens)
    for text, token in (("Paris", 1), (" is", 2), (" nice", 3), (" and big.", 4)):
        history.add_generated(text, [token])
    tokens, reused = await history.prompt("<p>Paris is<end><user>Q2", char_tokens)
    assert tokens[:5] == [ord(c) for c in "<p>"] + [1, 2]
    assert reused == len("<p>") + 2
    assert history.text == "<p>Paris is<end><user>Q2"


async def test_a_changed_system_prompt_reuses_nothing():
    history = TokenHistory()
    await history.prompt("<sys>A<user>Q", char_tokens)
    _, reused = await history.prompt("<sys>B<user>Q", char_tokens)
    assert reused == 0


async def test_after_the_oldest_turns_leave_the_kept_turns_keep_their_generated_tokens():
    history = TokenHistory(min_tail_tokens=4)
    await history.prompt("<sys>S<u>Q1<a>", char_tokens)
    history.add_generated("Old answer.", [2001])
    await history.prompt("<sys>S<u>Q1<a>Old answer.<e><u>Q2<a>", char_tokens)
    for text, token in (("Kept", 3001), (" answer", 3002), (" in", 3003), (" four.", 3004)):
        history.add_generated(text, [token])
    rendered = "<sys>S<u>(omitted) Q2<a>Kept answer in four.<e><u>Q3<a>"
    tokens, reused = await history.prompt(rendered, char_tokens)
    assert history.text == rendered
    assert [3001, 3002, 3003, 3004] == tokens[len("<sys>S<u>(omitted) Q2<a>") : len("<sys>S<u>(omitted) Q2<a>") + 4]
    assert reused == 4, "the changed first block is tokenized anew (the server still finds its unchanged start)"


async def test_a_short_run_after_a_change_is_tokenized_anew():
    history = TokenHistory(min_tail_tokens=4)
    await history.prompt("<p>", char_tokens)
    for text, token in (("A", 1), (" b", 2), (".", 3)):
        history.add_generated(text, [token])
    tokens, reused = await history.prompt("<q> b.<u>", char_tokens)
    assert tokens == [ord(c) for c in "<q> b.<u>"] and reused == 0
