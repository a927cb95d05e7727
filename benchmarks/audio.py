"""WAV helpers shared by the benchmarks and tests: any WAV in, 16 kHz mono s16le out."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import soxr

from servers.asr.engines.whisper import WINDOW, window_rms


def read_wav(path: str | Path, sample_rate: int = 16_000) -> np.ndarray:
    """Read a PCM WAV of any rate and channel count as mono int16 at `sample_rate`."""
    with wave.open(str(path), "rb") as f:
        width, channels, rate = f.getsampwidth(), f.getnchannels(), f.getframerate()
        raw = f.readframes(f.getnframes())
    if width != 2:
        raise ValueError(f"{path}: only 16-bit PCM WAV is supported (got {8 * width}-bit)")
    audio = np.frombuffer(raw, dtype="<i2").reshape(-1, channels).mean(axis=1) / 32768.0
    if rate != sample_rate:
        audio = soxr.resample(audio, rate, sample_rate)
    return (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = 16_000) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(audio.astype("<i2").tobytes())


def speak(text: str, path: str | Path, voice: str = "en-us", words_per_minute: int = 160) -> Path:
    """Synthesize `text` with Debian's espeak-ng (test speech, not product audio)."""
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(path), text], check=True)
    return Path(path)


class NaturalVoice:
    """Piper's neural voice (the TTS server's embedded one) as test speech: a phone line keeps only
    0-4 kHz, which leaves a natural voice's words intact and espeak-ng's formant voices' not
    (docs/phone.md). Needs the `piper` extra."""

    def __init__(self) -> None:
        from servers.tts.engines.piper import PiperEngine

        self._engine = PiperEngine()
        self._engine.load()

    def say(self, text: str) -> np.ndarray:
        """`text` spoken, as 16 kHz int16."""
        voice = self._engine.voices[0]
        audio = np.concatenate(list(self._engine.synthesize(text, voice, "en", True))).astype(np.float32)
        if np.abs(audio).max(initial=0) > 1.0:
            audio /= 32768
        return (np.clip(soxr.resample(audio, self._engine.sample_rate, 16_000), -1, 1) * 32767).astype(np.int16)


def chunks(audio: np.ndarray, chunk_ms: int = 20, sample_rate: int = 16_000) -> list[bytes]:
    """Split int16 audio into real-time-sized PCM frames."""
    step = sample_rate * chunk_ms // 1000
    return [audio[i : i + step].tobytes() for i in range(0, len(audio), step)]


def speech_bounds(audio: np.ndarray, threshold: float = 0.01) -> tuple[float, float]:
    """(start, end) in seconds of the 30 ms windows of 16 kHz int16 `audio` louder than `threshold`
    (RMS, full scale 1; the embedded ASR's speech detector); (0, 0) if none."""
    voiced = np.flatnonzero(window_rms(audio.astype(np.float32) / 32768) > threshold)
    if not len(voiced):
        return 0.0, 0.0
    return int(voiced[0]) * WINDOW / 16_000, (int(voiced[-1]) + 1) * WINDOW / 16_000


def with_pause(before: np.ndarray, after: np.ndarray, pause_s: float) -> np.ndarray:
    """16 kHz int16 speech `before`, exactly `pause_s` of silence, then `after` (each trimmed to its
    speech): a pause inside a sentence, as people make them ("What is the tallest … mountain?")."""
    (_, end), (start, stop) = speech_bounds(before), speech_bounds(after)
    silence = np.zeros(int(pause_s * 16_000), dtype=np.int16)
    return np.concatenate([before[: int(end * 16_000)], silence, after[int(start * 16_000) : int(stop * 16_000)]])
