"""Scripted pipeline runs for tests and benchmarks: play input, act on what comes out.

A `Script` pushes frames and, between them, awaits what the caller observes (a `Watch` of frames
going by, a `Count` of events), so a run never depends on a guess at how long the machine takes:
e.g. interrupt at the first audio, speak again once the client has reconnected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pipecat.frames.frames import (
    EndWorkerFrame,
    Frame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    FunctionCallsStartedFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    StartFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test

from pipecat_services.llm.reply_stats import ReplyStats

STEP_TIMEOUT_S = 60.0
"""How long a test waits for something it observes; only a broken feature takes this long."""


class Count:
    """A number of events a test can wait for."""

    def __init__(self) -> None:
        self.value = 0
        self._changed = asyncio.Condition()

    async def add(self, *_: object) -> None:
        """Count one (usable directly as a Pipecat event handler)."""
        async with self._changed:
            self.value += 1
            self._changed.notify_all()

    async def reached(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.value >= count)


class Watch(FrameProcessor):
    """Passes every frame on and counts those of type `kind`, so a test can wait for them."""

    def __init__(self, kind: type[Frame]) -> None:
        super().__init__()
        self.kind = kind
        self.count = Count()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, self.kind):
            await self.count.add()
        await self.push_frame(frame, direction)

    async def reached(self, count: int) -> None:
        await self.count.reached(count)


Step = Frame | Callable[[], Awaitable]


class Script(FrameProcessor):
    """Plays test input downstream, then ends the pipeline: each step is a frame to push, a
    `SleepFrame` (real-time pacing of audio), or a callable to await (something the test
    observes, e.g. `lambda: watch.reached(1)`). Tests act on events, never on a guess at how
    long the machine takes."""

    def __init__(self, *steps: Step) -> None:
        super().__init__()
        self._steps = steps
        self._task: asyncio.Task | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self._task = self.create_task(self._play())

    async def _play(self) -> None:
        for step in self._steps:
            if isinstance(step, SleepFrame):
                await asyncio.sleep(step.sleep)
            elif isinstance(step, Frame):
                await self.push_frame(step)
            else:
                await asyncio.wait_for(step(), STEP_TIMEOUT_S)
        await self.push_frame(EndWorkerFrame(), FrameDirection.UPSTREAM)

    async def cleanup(self) -> None:
        if self._task is not None:
            await self.cancel_task(self._task)
        await super().cleanup()


async def run_script(*processors: FrameProcessor, steps: list[Step], **kwargs) -> list[Frame]:
    """Run `Script(*steps)` into `processors`; returns the frames that came out downstream."""
    down, _ = await run_test(
        Pipeline([Script(*steps), *processors]), frames_to_send=[], send_end_frame=False, start_timeout=10, **kwargs
    )
    return down


class TurnRecorder(FrameProcessor):
    """After an LLM service in a user turn that may call tools: records the first call, the spoken
    text and, per reply, the `last_reply` numbers of `llm` (a `LlamaServerLLMService`); `done` is set
    once a reply ends without a call (the aggregator re-runs the LLM after a call's result)."""

    def __init__(self, llm: Any = None) -> None:
        super().__init__()
        self.llm = llm
        self.call: tuple[str, dict[str, Any]] | None = None
        self.result: Any = None
        """The first call's result."""
        self.text = ""
        self.first_text_at: float | None = None
        self.replies: list[ReplyStats] = []
        self.done = asyncio.Event()
        self._called = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            if isinstance(frame, FunctionCallsStartedFrame):
                self._called = True
            elif isinstance(frame, FunctionCallInProgressFrame) and self.call is None:
                self.call = (frame.function_name, dict(frame.arguments))
            elif isinstance(frame, FunctionCallResultFrame) and self.result is None:
                self.result = frame.result
            elif isinstance(frame, LLMTextFrame):
                self.text += frame.text
                self.first_text_at = self.first_text_at or time.perf_counter()
            elif isinstance(frame, LLMFullResponseEndFrame):
                if self.llm is not None and self.llm.last_reply is not None:
                    self.replies.append(self.llm.last_reply)
                if not self._called:
                    self.done.set()
                self._called = False
        await self.push_frame(frame, direction)
