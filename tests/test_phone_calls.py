"""Phone calls end to end: `bot.py -t twilio` and `-t telnyx` on real model servers, called by a client
that speaks each carrier's webhook and Media Streams protocol (benchmarks/phone_client.py).

The bot's public host is a name (`PUBLIC_HOST`), as behind a TLS proxy: the webhook is signed for
`https://PUBLIC_HOST/`, and the client opens the stream path the instructions name on the bot itself.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from benchmarks.phone_client import CarrierAccount, PhoneCallClient
from benchmarks.webrtc_client import WebRTCVoiceClient
from phone_calls import StreamTokens
from tests.conftest import ROOT, RestartableServer, serve_bot

pytestmark = pytest.mark.timeout(300)
PUBLIC_HOST = "phone.example.test"


@dataclass
class PhoneBot:
    """A running phone bot, the carrier account it trusts, and where it writes call transcripts."""

    server: RestartableServer
    account: CarrierAccount
    transcripts: Path

    def client(self, account: CarrierAccount | None = None) -> PhoneCallClient:
        return PhoneCallClient(self.server.http_url, account or self.account, PUBLIC_HOST, self.transcripts)


@pytest.fixture(scope="module", params=["twilio", "telnyx"])
def phone_bot(request, tmp_path_factory, asr_server, tts_server, llm_server) -> Iterator[PhoneBot]:
    """The bot answering one carrier's calls (SmolLM2, CI-sized), writing call transcripts."""
    account = CarrierAccount.new(request.param)
    transcripts = tmp_path_factory.mktemp(f"{request.param}_transcripts")
    settings = account.bot_env | {"BOT_TRANSCRIPTS": str(transcripts)}
    transport = ("-t", request.param, "-x", PUBLIC_HOST)
    for server in serve_bot(tmp_path_factory, asr_server, tts_server, llm_server, settings, transport):
        yield PhoneBot(server, account, transcripts)


async def heard(whisper, audio: np.ndarray) -> str:
    return (await whisper.transcribe(audio.astype(np.float32) / 32768)).lower()


async def test_a_phone_call_holds_a_spoken_conversation(phone_bot, whisper, say_natural):
    client = phone_bot.client()
    await client.connect()
    try:
        speech_end = await client.say(say_natural("What is the capital of France?"))
        reply = await client.whole_reply(speech_end)
        assert reply is not None, "the bot never answered"
        said = await heard(whisper, reply)
        latency = await client.wait_for_message("turn_latency", speech_end, timeout=5)
    finally:
        await client.hang_up()
    assert "paris" in said, said
    assert latency is not None and "capital" in latency["user_text"].lower(), latency
    assert 0 < latency["server_v2v_ms"] < 20_000, latency


async def test_barge_in_on_a_phone_line_clears_the_carriers_buffer(phone_bot, say_natural):
    """Speech over the bot's reply stops its audio and sends the carrier `clear` (the bound only
    tells a working barge-in from none, on a machine of any speed)."""
    client = phone_bot.client()
    await client.connect()
    try:
        result = await client.barge_in(
            say_natural("Tell me a long story about a dragon and a brave knight."),
            say_natural("Hold on what is two plus two"),
        )
    finally:
        await client.hang_up()
    started = result.reply_start + result.played_s
    assert any(t >= started for t in client.clears), (client.clears, started)
    assert result.stop_ms <= 1000, result
    assert result.stored is not None and result.stored["interrupted"], result


async def test_the_bot_ending_the_call_closes_the_stream(phone_bot, say_natural):
    """After its answer to a farewell the bot ends the call: its side closes the media stream (with
    nothing after `<Connect>`, the carrier then hangs up)."""
    client = phone_bot.client()
    await client.connect()
    try:
        speech_end = await client.say(say_natural("Thanks, that is all. Goodbye!"))
        reply_start = await client.wait_for_reply_start(speech_end, timeout=60)
        assert reply_start is not None, "the bot did not answer"
        assert await client.wait_for_close(timeout=60) is not None, "the bot never ended the call"
        assert client.audio.voiced_times(reply_start), "the call ended before the answer was heard"
    finally:
        await client.close()


async def test_keypad_digits_reach_the_context(phone_bot):
    """`dtmf` events become one user turn ("DTMF: 1234#") in the conversation, and the bot answers it."""
    client = phone_bot.client()
    await client.connect()
    try:
        await asyncio.sleep(1.0)
        pressed = asyncio.get_running_loop().time()
        await client.press("1234#")
        turn = await client.wait_for_message("user_turn", 0, timeout=15)
        reply = await client.wait_for_reply_start(pressed, timeout=60)
    finally:
        await client.hang_up()
    assert turn is not None and turn["text"] == "DTMF: 1234#", turn
    assert reply is not None, "the bot did not answer the keys"


async def test_a_webhook_without_a_valid_signature_is_refused(phone_bot):
    async def post(body: bytes, headers: dict[str, str]) -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{phone_bot.server.http_url}/", data=body, headers=headers) as r,
        ):
            return r.status

    signed, headers = phone_bot.account.signed_webhook(f"https://{PUBLIC_HOST}/", "CA1")
    assert await post(signed, headers) == 200
    unsigned = {k: v for k, v in headers.items() if k.lower() == "content-type"}
    assert await post(signed, unsigned) == 403
    assert await post(signed.replace(b"CA1", b"CA2"), headers) == 403, "a changed body kept its signature"
    other_account = CarrierAccount.new(phone_bot.account.name)
    assert await post(*other_account.signed_webhook(f"https://{PUBLIC_HOST}/", "CA1")) == 403
    if phone_bot.account.name == "twilio":  # Twilio signs the URL; Telnyx only the body
        assert await post(*phone_bot.account.signed_webhook("https://elsewhere.test/", "CA1")) == 403


async def test_a_stream_without_the_issued_token_is_refused(phone_bot):
    forged = phone_bot.client()
    await forged.connect(token="not-a-token")
    try:
        assert await forged.wait_for_close(timeout=10) == 1008
        assert not forged.audio.chunks
    finally:
        await forged.close()
    first = phone_bot.client()
    await first.connect()
    replay = phone_bot.client()
    try:
        await replay.open_stream("/ws", first.token)
        assert await replay.wait_for_close(timeout=10) == 1008, "a used token opened a second stream"
        assert await first.wait_for_close(timeout=1) is None, "the first call was dropped"
    finally:
        await replay.close()
        await first.hang_up()


async def test_a_phone_bot_runs_no_playground_session(phone_bot):
    """The runner's WebRTC routes skip the signature and the token: a phone bot starts no call there."""
    client = WebRTCVoiceClient(phone_bot.server.http_url)
    try:
        await client.connect(timeout=10)
    except (aiohttp.ClientResponseError, TimeoutError):
        return  # no such route, or no media ever flowed
    finally:
        await client.close()
    raise AssertionError("a Playground session reached a phone bot")


async def test_the_runners_own_media_route_runs_no_call(bot_server, tmp_path):
    """Pipecat's runner serves /ws on every bot; without -t twilio|telnyx a stream there is refused."""
    account = CarrierAccount.new("twilio")
    client = PhoneCallClient(bot_server.http_url, account, PUBLIC_HOST)
    await client.open_stream("/ws", "any")
    try:
        assert await client.wait_for_close(timeout=10) == 1008
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["-t", "twilio", "-x", PUBLIC_HOST], {}, "TWILIO_AUTH_TOKEN"),
        (["-t", "telnyx", "-x", PUBLIC_HOST], {}, "TELNYX_PUBLIC_KEY"),
        (["-t", "twilio"], {"TWILIO_AUTH_TOKEN": "x"}, "-x HOST"),
    ],
)
def test_a_phone_bot_without_its_secret_or_public_host_does_not_start(args, env, message):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "TELNYX_"))}
    result = subprocess.run(
        [sys.executable, "bot.py", *args], cwd=ROOT, env=base | env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]


async def test_stream_tokens_are_one_time_short_lived_and_bounded():
    now = [0.0]
    tokens = StreamTokens(ttl_s=30, capacity=2, clock=lambda: now[0])
    first, second = await tokens.issue(), await tokens.issue()
    assert first and second and first != second
    assert await tokens.issue() is None, "past capacity"
    assert await tokens.redeem(first) and not await tokens.redeem(first)
    now[0] = 31.0
    assert not await tokens.redeem(second), "expired"
    assert await tokens.issue() is not None, "expired tokens free their places"
    assert not await tokens.redeem("never-issued")
