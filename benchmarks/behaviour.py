"""Behaviour benchmark: scripted moments of a call, over WebRTC with spoken audio, against the
running agent (`scripts/run.sh`), each in a session of its own.

    python -m benchmarks.behaviour                          # every scenario
    python -m benchmarks.behaviour --only tools --rounds 3  # one scenario, more turns

Scenarios, with what each prints:
  tools      tool questions and plain ones, with the filler on and off (the session setting
             `tool_filler`, so both in one run): the first audio and, for tool turns, the answer's
             first audio after the filler, p50/p90 in ms from the end of the question
  idle       a user who never speaks: when the nudge starts (target: `idle_secs` +/- 1 s) and
             whether the call ended after the second silence with a goodbye
  farewells  farewells must end the call, closers that are not ("thanks, one more thing") and noise
             or backchannels alone must not
  interruptions
             10 listener backchannels ("mhm", "okay"), 5 listener noises (throat clear, sigh, chuckle,
             gasp) and 10 real interruptions ("wait, stop") played 2 s into a long answer, with the
             pause on and off (`pause_on_sound`): which interrupt it, how long the bot's audio goes on
             after one begins, and the words an answer that went on lost or repeated (its audio
             transcribed against its text; silence played is the control)
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path
from typing import TypeVar

import numpy as np

from benchmarks.hearing import ClipMaker
from benchmarks.scoring import normalize
from benchmarks.stats import fmt
from benchmarks.webrtc_client import WebRTCVoiceClient
from pipecat_services.spoken_phrases import FILLERS
from servers.asr.engines.whisper import WhisperEngine
from servers.ports import BOT_PORT

TOOL_QUESTIONS = (
    "What time is it right now?",
    "What day of the week is it today?",
    "What is today's date?",
    "Can you tell me the time, please?",
    "What time is it?",
)
PLAIN_QUESTIONS = (
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What color is the sky?",
    "What is two plus two?",
    "What is the tallest mountain in the world?",
)
FAREWELLS = (
    "Thanks, bye!",
    "Okay, that's all, thank you.",
    "Talk to you later.",
    "Goodbye!",
    "Bye bye.",
    "That's it for today, thanks.",
    "I have to go now, bye.",
    "See you tomorrow.",
    "Good night!",
    "Thanks, that is all.",
)
NOT_FAREWELLS = (
    "Thanks, one more thing.",
    "Okay.",
    "Thank you.",
    "Great, thanks!",
    "Alright, I see.",
    "Okay, and what about tomorrow?",
    "Cool.",
    "That's interesting.",
    "Perfect, thank you so much.",
    "Hmm, let me think.",
)
BACKCHANNELS = ("Mhm.", "Uh-huh.", "Right.", "Yeah.", "I see.")
LISTENER_SOUNDS = (*BACKCHANNELS, "Okay.", "Sure.", "Got it.", "Yes.", "Mm-hmm.")
REAL_INTERRUPTIONS = (
    "Wait, stop.",
    "No, I meant Paris.",
    "Hold on, what about tomorrow?",
    "Stop, that is wrong.",
    "Actually, tell me about cats instead.",
    "Sorry, can you repeat that?",
    "No no no.",
    "Wait, what time is it?",
    "Hang on, I have a question.",
    "Excuse me, how far is the moon?",
)
STORY = "Tell me about the history of lighthouses."
SCENARIOS = ("tools", "idle", "farewells", "interruptions")
VOICE = "en-us+m3"
T = TypeVar("T")


@dataclass(frozen=True)
class ToolTurn:
    """One question in a session of its own: ms from the end of the question to the first audio, and
    to the answer's (after a filler; the same without one)."""

    question: str
    filler: str | None
    first_ms: float | None
    answer_ms: float | None


async def session(url: str, body: dict, act: Callable[[WebRTCVoiceClient], Awaitable[T]]) -> T:
    """`act` in a session of its own, with the session settings `body`."""
    client = WebRTCVoiceClient(url, body)
    await client.connect()
    try:
        return await act(client)
    finally:
        await client.close()


async def tool_turn(url: str, question: str, audio: np.ndarray, filler_on: bool, timeout: float) -> ToolTurn:
    async def act(client: WebRTCVoiceClient) -> ToolTurn:
        await asyncio.sleep(1.0)
        speech_end = await client.say(audio)
        turns = await client.wait_for_answer(speech_end, timeout)
        if turns is None:
            return ToolTurn(question, None, None, None)
        voiced = client.audio.voiced_times(speech_end)
        filler = turns[0] if turns[0] in FILLERS else None
        answer = voiced[0] if voiced else None
        if filler:
            stopped = [t for t, m in client.messages if t > speech_end and m.get("type") == "bot-stopped-speaking"]
            after = client.audio.voiced_times(stopped[0]) if stopped else []
            answer = after[0] if after else None
        ms = [None if t is None else 1000 * (t - speech_end) for t in (voiced[0] if voiced else None, answer)]
        return ToolTurn(question, filler, *ms)

    return await session(url, {"tool_filler": filler_on, "idle_secs": 0}, act)


async def tools(url: str, maker: ClipMaker, rounds: int, timeout: float) -> None:
    """Plain and tool turns, the filler on and off, interleaved so the host's drift hits all alike."""
    clips = {q: maker.say(q, VOICE) for q in (*TOOL_QUESTIONS, *PLAIN_QUESTIONS)}
    results: dict[tuple[str, bool], list[ToolTurn]] = {}
    for _ in range(rounds):
        for tool_q, plain_q in zip(TOOL_QUESTIONS, PLAIN_QUESTIONS, strict=True):
            for filler_on in (False, True):
                for kind, question in (("tool", tool_q), ("plain", plain_q)):
                    turn = await tool_turn(url, question, clips[question], filler_on, timeout)
                    results.setdefault((kind, filler_on), []).append(turn)
                    print(f"  {kind:<5} filler {'on ' if filler_on else 'off'} {turn}", flush=True)
    for filler_on in (False, True):
        label = "filler on " if filler_on else "filler off"
        for kind in ("plain", "tool"):
            turns = results[(kind, filler_on)]
            first = [t.first_ms for t in turns if t.first_ms is not None]
            if first:
                print(fmt(f"{label} {kind} turns, first audio", first))
        tool_turns = results[("tool", filler_on)]
        answers = [t.answer_ms for t in tool_turns if t.answer_ms is not None]
        if answers:
            print(fmt(f"{label} tool turns, the answer's audio", answers))
        said = sum(t.filler is not None for t in tool_turns)
        print(f"{label}: {said}/{len(tool_turns)} tool turns said a filler, {len(answers)} answered")


async def idle(url: str, maker: ClipMaker, rounds: int, idle_s: float) -> None:
    """A user who says nothing: the nudge after `idle_s`, then a goodbye and the end of the call."""

    async def act(client: WebRTCVoiceClient) -> tuple[float | None, bool, bool]:
        connected = asyncio.get_running_loop().time()
        nudge = await client.wait_for_reply_start(connected, timeout=idle_s + 10)
        ended = await client.wait_for_end(timeout=2 * idle_s + 20)
        goodbye = ended is not None and nudge is not None and bool(client.audio.voiced_times(nudge + 3.0, ended))
        return (None if nudge is None else nudge - connected), ended is not None, goodbye

    outcomes = [await session(url, {"idle_secs": idle_s}, act) for _ in range(rounds * 5)]
    nudges = [n for n, _, _ in outcomes if n is not None]
    on_time = sum(abs(n - idle_s) <= 1.0 for n in nudges)
    ended = sum(e and g for _, e, g in outcomes)
    print(fmt(f"idle {idle_s:.0f} s: nudge after", [1000 * n for n in nudges]))
    print(f"idle: nudge within +/-1 s of {idle_s:.0f} s {on_time}/{len(outcomes)}, ended with a goodbye {ended}")


async def farewells(url: str, maker: ClipMaker, rounds: int, timeout: float) -> None:
    """Which lines end the call (after the bot's answer, if any)."""

    async def ends(audio: np.ndarray) -> tuple[bool, str]:
        """Whether the call ended, and what the bot heard."""

        async def act(client: WebRTCVoiceClient) -> tuple[bool, str]:
            await asyncio.sleep(1.0)
            speech_end = await client.say(audio)
            reply = await client.wait_for_reply(speech_end, timeout=min(timeout, 15.0), quiet=1.5)
            ended = await client.wait_for_end(timeout=6.0 if reply else 3.0) is not None
            return ended, " ".join(m["user_text"] for m in client.server_messages("turn_latency", speech_end))

        return await session(url, {"idle_secs": 0}, act)

    groups = {
        "farewells": [maker.say(line, VOICE) for line in FAREWELLS],
        "closers that are not farewells": [maker.say(line, VOICE) for line in NOT_FAREWELLS],
        "backchannels alone": [maker.say(line, VOICE) for line in BACKCHANNELS],
        "noise alone (babble, fan)": [(maker.noise(1.5)[1] * 0.05 * 32768).astype(np.int16) for _ in range(5)],
    }
    for name, clips in groups.items():
        outcomes = [await ends(audio) for _ in range(rounds) for audio in clips]
        heard = "; ".join(f"{text!r}{' (ended)' if ended else ''}" for ended, text in outcomes)
        print(f"{name}: the call ended {sum(e for e, _ in outcomes)}/{len(outcomes)}; heard {heard}", flush=True)


LISTENER_NOISES = {"throat clear": "Ahem!", "two throat clears": "Ahem, ahem!", "sigh": "Phew.", "chuckle": "Hehe."}
"""Sounds a listener makes that are no words, as espeak-ng makes them (voice m3; the gasp f2): Silero
hears them as voice, so today they interrupt. Synthetic coughs, knocks and clatter do not reach its
threshold (docs/conversation.md), so they would test nothing."""


def listener_noises(maker: ClipMaker) -> dict[str, np.ndarray]:
    return {
        **{name: maker.say(text, VOICE) for name, text in LISTENER_NOISES.items()},
        "gasp": maker.say("Ahh.", "en-us+f2"),
    }


@dataclass(frozen=True)
class SoundOverSpeech:
    """One sound played into a long answer, with the pause on or off: whether it interrupted, when the
    bot's audio stopped after it began (ms, at the client), and for an answer that went on, the words
    its audio around the sound lost or repeated against what went into the context (and those
    merely misheard)."""

    interrupted: bool
    heard_ms: float
    lost: list[str]
    repeated: list[str]
    misheard: int


def word_changes(said: str, heard: str) -> tuple[list[str], list[str], int]:
    """Where `heard` (a stretch of the bot's audio, transcribed) lies in `said` (the whole answer): the
    words of `said` it lacks inside that stretch, those it has in excess, and the number replaced. Its
    ends are left out: the stretch may begin or end inside a word."""
    a, b = normalize(said).split(), normalize(heard).split()
    ops = [op for op in SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()]
    matched = [i for i, op in enumerate(ops) if op[0] == "equal"]
    lost, extra, replaced = [], [], 0
    for op, i1, i2, j1, j2 in ops[matched[0] + 1 : matched[-1]] if matched else []:
        lost += a[i1:i2] if op == "delete" else []
        extra += b[j1:j2] if op == "insert" else []
        replaced += max(i2 - i1, j2 - j1) if op == "replace" else 0
    return lost, extra, replaced


AROUND_S = (3.0, 6.0)
"""The bot's audio transcribed to find words lost or repeated: this long before the sound and after
it (the pause and the resume in between); the answer's text is what the context stored."""


async def sound_over_speech(
    url: str, whisper: WhisperEngine, request: np.ndarray, sound: np.ndarray, pause: bool, after_s: float
) -> SoundOverSpeech:
    async def act(client: WebRTCVoiceClient) -> SoundOverSpeech:
        await asyncio.sleep(1.0)
        result = await client.barge_in(request, sound, after_s, reply_wait_s=90)
        stored = result.stored or {"interrupted": True, "text": ""}
        if stored["interrupted"]:
            return SoundOverSpeech(True, result.heard_ms, [], [], 0)
        sound_at = result.reply_start + result.played_s
        around = client.audio.between(sound_at - AROUND_S[0], sound_at + AROUND_S[1]).astype(np.float32) / 32768
        heard = await whisper.transcribe(np.concatenate([around, np.zeros(8000, np.float32)]))
        return SoundOverSpeech(False, result.heard_ms, *word_changes(stored["text"], heard))

    return await session(url, {"idle_secs": 0, "pause_on_sound": pause, "temperature": 0.0}, act)


async def interruptions(url: str, maker: ClipMaker, rounds: int, after_s: float) -> None:
    """Sounds played `after_s` into a long answer, each with the pause on and off (the session setting
    `pause_on_sound`, so both in one run): which interrupt it, how soon the bot's audio stops (at the
    client, as `benchmarks.barge_in`), and whether an answer that went on lost or repeated words."""
    whisper = WhisperEngine()
    whisper.load()
    request = maker.say(STORY, VOICE)
    groups = {
        "nothing (control)": {"silence": np.zeros(8000, np.int16)},
        "listener backchannels": {line: maker.say(line, VOICE) for line in LISTENER_SOUNDS},
        "listener noises": listener_noises(maker),
        "real interruptions": {line: maker.say(line, VOICE) for line in REAL_INTERRUPTIONS},
    }
    for name, sounds in groups.items():
        results: dict[bool, list[SoundOverSpeech]] = {False: [], True: []}
        for _ in range(rounds):
            for label, sound in sounds.items():
                for pause in (False, True):
                    result = await sound_over_speech(url, whisper, request, sound, pause, after_s)
                    results[pause].append(result)
                    print(f"  pause {'on ' if pause else 'off'} {label!r}: {result}", flush=True)
        for pause, outcomes in results.items():
            label = f"{name}, pause {'on' if pause else 'off'}"
            went_on = [r for r in outcomes if not r.interrupted]
            lost = sum(len(r.lost) for r in went_on)
            repeated = sum(len(r.repeated) for r in went_on)
            misheard = sum(r.misheard for r in went_on)
            print(
                f"{label}: interrupted {len(outcomes) - len(went_on)}/{len(outcomes)}; of the answers that went on, "
                f"words lost {lost}, repeated {repeated} (misheard {misheard})",
                flush=True,
            )
            stops = [r.heard_ms for r in outcomes if r.interrupted]
            if stops:
                print(fmt(f"{label}: bot's audio after the sound began", stops))


async def main_async(args: argparse.Namespace) -> None:
    url = args.url
    with tempfile.TemporaryDirectory() as tmp:
        maker = ClipMaker(Path(tmp), args.seed)
        for name in args.only.split(","):
            print(f"== {name} ==", flush=True)
            if name == "tools":
                await tools(url, maker, args.rounds, args.turn_timeout)
            elif name == "idle":
                await idle(url, maker, args.rounds, args.idle_secs)
            elif name == "farewells":
                await farewells(url, maker, args.rounds, args.turn_timeout)
            elif name == "interruptions":
                await interruptions(url, maker, args.rounds, args.after)
            else:
                raise SystemExit(f"unknown scenario {name!r}; have {', '.join(SCENARIOS)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=f"http://localhost:{BOT_PORT}", help="the bot's runner (default: %(default)s)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--rounds", type=int, default=1, help="times each scenario's set is played")
    parser.add_argument("--idle-secs", type=float, default=8.0, help="the idle scenario's setting")
    parser.add_argument("--after", type=float, default=2.0, help="seconds into a long answer a sound is played")
    parser.add_argument("--turn-timeout", type=float, default=40.0, help="seconds to wait for a reply")
    parser.add_argument("--seed", type=int, default=7)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
