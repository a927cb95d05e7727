"""TokenHistory's prefix reuse, with a deterministic stand-in tokenizer (one token per character)."""

from pipecat_services.token_history import TokenHistory


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
