"""The Pipecat Playground in a real browser, used the way people use it.

Debian's chromium, driven by Playwright (no browser download), opens the Playground the bot serves at
/client; its fake microphone plays a question spoken by espeak-ng. The test clicks Connect and
checks what a user sees and hears: their transcript and the bot's reply in the conversation panel,
and sound on the bot's remote audio track. It prints the client-side voice-to-voice latency (end of
the question at the microphone → first bot audio, both measured in the page) and leaves a
screenshot and the measurements in artifacts/playground/.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest

from benchmarks.audio import read_wav, speak, write_wav
from servers.processes import ROOT

CHROMIUM = shutil.which("chromium")
ASSETS = Path(__file__).parent / "playground"
ARTIFACTS = ROOT / "artifacts" / "playground"
QUESTION = "What is the capital of France?"
# The page opens the microphone when it loads, so chromium starts the WAV before Connect is
# clicked: the question waits this long for the connection and the bot's pipeline.
LEAD_SECS = 6.0
# Web Audio RMS (full scale 1.0) above which a 10 ms window counts as sound: -40 dBFS.
SOUND_RMS = 0.01
REPLY_TIMEOUT_MS = 60_000
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The probe's AudioContext starts with the page, before the click that would allow it to run.
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")

# The client's state in the Status panel ("initialized" once the microphone is open, then "ready").
CLIENT_STATE_JS = """() => document.querySelector('[data-slot="client-status"] dd')?.textContent.trim()"""
# The conversation panel: each message is a role label followed by its content.
MESSAGES_JS = """() => [...document.querySelectorAll('[data-slot="conversation"] [data-slot="message-role"]')]
    .map((role) => [role.textContent.trim(), role.nextElementSibling?.firstElementChild?.innerText.trim() ?? ''])"""
REPLY_HEARD_JS = """(threshold) => {
    const roles = [...document.querySelectorAll('[data-slot="conversation"] [data-slot="message-role"]')]
        .map((role) => role.textContent.trim());
    return roles.includes('user') && roles.includes('assistant')
        && window.__probe.bot.some(([, rms]) => rms > threshold);
}"""
INBOUND_AUDIO_JS = """async () => {
    const reports = [];
    for (const pc of window.__probe.peerConnections) {
        (await pc.getStats()).forEach((r) => {
            if (r.type === 'inbound-rtp' && r.kind === 'audio') reports.push(r);
        });
    }
    return reports;
}"""


@dataclass
class Conversation:
    """What the page showed and measured during one spoken question and the start of its answer."""

    messages: list[tuple[str, str]]
    mic: list[tuple[float, float]]  # (page ms, RMS) of the microphone track every 10 ms
    bot: list[tuple[float, float]]  # the same for the bot's remote audio track
    connected_ms: float | None
    inbound_audio: list[dict]
    page_errors: list[str]
    browser_start_s: float

    def texts(self, role: str) -> list[str]:
        return [text for r, text in self.messages if r == role]

    def sound_ms(self, track: str) -> np.ndarray:
        levels = np.array(getattr(self, track), dtype=float).reshape(-1, 2)
        return levels[levels[:, 1] > SOUND_RMS, 0]

    def voice_to_voice_ms(self) -> float | None:
        """Last sound at the microphone before the bot's first sound → that first sound."""
        said, heard = self.sound_ms("mic"), self.sound_ms("bot")
        heard = heard[heard > said[0]] if len(said) else heard[:0]
        if not len(heard):
            return None
        return float(heard[0] - said[said < heard[0]][-1])


@pytest.fixture(scope="module")
def playground_url(bot_server) -> str:
    """The Playground the bot serves (`bot.py -t webrtc`, on the session's embedded model servers)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return f"{bot_server.http_url}/client/"


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LEAD_SECS of silence, then the question: 16-bit PCM, which chromium's fake microphone reads."""
    folder = tmp_path_factory.mktemp("playground")
    speech = read_wav(speak(QUESTION, folder / "speech.wav", voice="en-us+m3", words_per_minute=150))
    write_wav(folder / "question.wav", np.concatenate([np.zeros(int(LEAD_SECS * 16_000), np.int16), speech]))
    return folder / "question.wav"


@pytest.fixture(scope="module")
def conversation(playground_url: str, question_wav: Path) -> Conversation:
    """Open the Playground, click Connect, and wait until the reply is both shown and heard."""
    # Installed by scripts/test.sh; it drives /usr/bin/chromium and never downloads a browser.
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    stub = (ASSETS / "daily_stub.js").read_text()
    with sync_playwright() as playwright:
        started = time.monotonic()
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={question_wav}%noloop"],
        )
        browser_start_s = time.monotonic() - started
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page_errors: list[str] = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.add_init_script(path=ASSETS / "probe.js")
            stubbed: list[str] = []

            def serve_stub(route) -> None:
                stubbed.append(route.request.url)
                route.fulfill(body=stub, content_type="text/javascript")

            page.route("**/assets/daily-esm-*.js", serve_stub)
            page.goto(playground_url)
            # As a user would: a click while the page is still opening the microphone is dropped.
            try:
                page.wait_for_function(f"({CLIENT_STATE_JS})() === 'initialized'", timeout=30_000)
            except PlaywrightTimeout as e:
                state = page.evaluate(CLIENT_STATE_JS)
                raise AssertionError(
                    f"the Playground never opened the microphone (client state {state!r}); daily-js stub served for "
                    f"{stubbed or 'no request: did pipecat-ai-prebuilt rename its daily-esm asset?'}"
                ) from e
            page.get_by_role("button", name="Connect", exact=True).click()
            try:
                page.wait_for_function(REPLY_HEARD_JS, arg=SOUND_RMS, timeout=REPLY_TIMEOUT_MS, polling=100)
                page.wait_for_timeout(1000)  # the reply's first words on screen for the screenshot
            except PlaywrightTimeout:
                pass  # the tests below say what is missing
            page.screenshot(path=ARTIFACTS / "playground.png")
            probe = page.evaluate("({mic: __probe.mic, bot: __probe.bot, connected: __probe.connectedAt})")
            result = Conversation(
                messages=[tuple(m) for m in page.evaluate(MESSAGES_JS)],
                mic=probe["mic"],
                bot=probe["bot"],
                connected_ms=probe["connected"],
                inbound_audio=page.evaluate(INBOUND_AUDIO_JS),
                page_errors=page_errors,
                browser_start_s=browser_start_s,
            )
            # Hang up as a user would: a closed browser leaves the bot's session waiting for ICE to time out.
            disconnect = page.get_by_role("button", name="Disconnect", exact=True)
            if disconnect.is_visible():
                disconnect.click()
                page.wait_for_function(f"({CLIENT_STATE_JS})() === 'disconnected'", timeout=10_000)
        finally:
            browser.close()
    report = {"voice_to_voice_ms": result.voice_to_voice_ms(), **asdict(result)}
    (ARTIFACTS / "playground.json").write_text(json.dumps(report, indent=1))
    return result


def test_question_starts_after_connecting(conversation: Conversation) -> None:
    said = conversation.sound_ms("mic")
    assert len(said), "the fake microphone played no sound (chromium's --use-file-for-fake-audio-capture)"
    assert conversation.connected_ms is not None, "the peer connection never connected"
    assert conversation.connected_ms < said[0], (
        f"the question started {said[0]:.0f} ms after page load, before the connection "
        f"({conversation.connected_ms:.0f} ms): raise LEAD_SECS"
    )


def test_user_transcript_shown(conversation: Conversation) -> None:
    assert any("france" in text.lower() for text in conversation.texts("user")), conversation.messages


def test_bot_reply_shown(conversation: Conversation) -> None:
    assert any(conversation.texts("assistant")), conversation.messages


def test_bot_audio_is_heard(conversation: Conversation) -> None:
    """Sound on the remote track, by the page's Web Audio analyser and by WebRTC's own receiver stats."""
    assert len(conversation.sound_ms("bot")), "the bot's audio track stayed silent in the page"
    energy = sum(r.get("totalAudioEnergy", 0.0) for r in conversation.inbound_audio)
    assert energy > 0, conversation.inbound_audio


def test_voice_to_voice(conversation: Conversation, capsys: pytest.CaptureFixture) -> None:
    v2v = conversation.voice_to_voice_ms()
    assert v2v is not None and v2v > 0, "no bot audio after the question"
    with capsys.disabled():
        print(
            f"\nPlayground in chromium: voice-to-voice {v2v:.0f} ms (end of question → first bot audio, in the page); "
            f"browser start {conversation.browser_start_s:.1f} s; screenshot {ARTIFACTS / 'playground.png'}"
        )
