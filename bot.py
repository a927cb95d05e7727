"""The voice agent: Pipecat pipeline over our ASR, LLM and TTS servers.

    transport in → STT (ASR server) → backchannel gate (the user's words over the bot's decide)
                 → interim prefill (the user's words to the LLM while they speak)
                 → user aggregator (Silero VAD, Smart Turn v3 + sentence end, user idle)
                 → LLM (llama-server, or any OpenAI-compatible server) → call ender
                 → TTS (TTS server) → speech pacer (pauses) → transport out → assistant aggregator

The user aggregator owns VAD and turn detection and broadcasts the VAD frames both ways, so the
STT client ahead of it finalizes the moment speech stops. Barge-in: the aggregator's interruption
stops the bot's audio, cancels the LLM stream and the TTS context; the assistant aggregator keeps
only the words already heard (the TTS client times them), and the LLM's token history follows.
Speech over the bot's first pauses it, and its words decide: a backchannel ("mhm") or none (a cough)
resume it, anything else interrupts.
A phone call has keypad entries as turns ("DTMF: 12#", after the backchannel gate) and 8 kHz audio out.
A call ends after the bot's answer to the user's farewell, or after a nudge and a goodbye to a user
who stopped answering.

    python bot.py -t webrtc      Pipecat Playground at http://localhost:7860/client
    python bot.py -t twilio -x bot.example.com      phone calls (also telnyx; docs/phone.md)
    python bot.py --help         every setting (bot_config.py), each with its BOT_* variable
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import uuid
from pathlib import Path

from fastapi import FastAPI, WebSocket
from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import MetricsFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    AssistantTurnStoppedMessage,
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
    UserBackchannelMessage,
    UserTurnStoppedMessage,
)
from pipecat.processors.frameworks.rtvi.frames import RTVIServerMessageFrame
from pipecat.runner.types import RunnerArguments, WebSocketRunnerArguments
from pipecat.runner.utils import create_transport
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.serializers.protobuf import ProtobufFrameSerializer
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.turns.user_start import TranscriptionUserTurnStartStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies, default_user_turn_start_strategies
from pipecat.workers.runner import WorkerRunner

from bot_config import BotConfig, add_bot_flags
from bot_tools import bot_tools
from phone_calls import CARRIERS, PhoneSetupError, StreamStart, StreamTokens, add_phone_routes, file_name
from pipecat_services import tracing
from pipecat_services.asr_stt import ASRServerSTTService
from pipecat_services.backchannels import BackchannelGate, BackchannelPhrases, QuietBotVADUserTurnStartStrategy
from pipecat_services.call_ending import CallEnder
from pipecat_services.call_records import CallRecording, CallTranscript
from pipecat_services.interleaving import Interleaver
from pipecat_services.keypad import KeypadUserTurnStopStrategy, keypad_aggregator
from pipecat_services.llm.filler import FILLER_TEXT_TYPE, CallFiller
from pipecat_services.llm.generation import Interleaving
from pipecat_services.llm.interim_prefill import InterimPrefill
from pipecat_services.llm.llama_server.service import LlamaServerLLMService
from pipecat_services.llm.openai_compatible import BudgetedOpenAILLMService
from pipecat_services.llm.service import TokenLLMService
from pipecat_services.mcp_tools import MCPConfigError, MCPToolbox, read_mcp_servers
from pipecat_services.model_readiness import ModelServers, add_warming_up_routes, one_moment
from pipecat_services.pipecat_internals import start_user_idle_timer
from pipecat_services.speech_pacer import BotSpeechPacer
from pipecat_services.tts import TTSServerTTSService
from pipecat_services.turn_end import (
    BackgroundTurnAnalyzerUserTurnStopStrategy,
    ReopenedTranscriptUserTurnStartStrategy,
    SentenceEndUserTurnStopStrategy,
)
from pipecat_services.turn_metrics import TurnLatencyMetricsData, TurnLatencyObserver
from servers.auth import modal_proxy_headers

AUDIO_OUT_CHUNKS = 2
"""The output transports write 20 ms chunks (Pipecat: 40): a pause or an interruption still lets the
one being written play out."""
TRANSPORTS = {
    "webrtc": lambda: TransportParams(
        audio_in_enabled=True, audio_out_enabled=True, audio_out_10ms_chunks=AUDIO_OUT_CHUNKS
    ),
    "websocket": lambda: websocket_params(ProtobufFrameSerializer()),
}
"""SmallWebRTC (the Playground, POST /api/offer) and Pipecat's protobuf WebSocket (/ws-client); phone
calls come through `phone_calls.py`'s routes."""
PHONE_SAMPLE_RATE = 8000
"""A phone line's audio: the TTS output is resampled once, straight to it."""


def websocket_params(serializer: FrameSerializer) -> FastAPIWebsocketParams:
    return FastAPIWebsocketParams(
        audio_in_enabled=True, audio_out_enabled=True, audio_out_10ms_chunks=AUDIO_OUT_CHUNKS, serializer=serializer
    )


VAD_MIN_VOLUME = 0.3
"""Pipecat's 0.6 smooths the volume in slowly and adds ~80 ms before a barge-in is noticed; Silero's
confidence (0.7) still decides what is speech."""


def make_llm(config: BotConfig, interleaver: Interleaver | None, context: LLMContext) -> LLMService:
    if config.llm_api == "openai":
        return BudgetedOpenAILLMService(
            api_key=config.llm_api_key,
            base_url=config.llm_url,
            default_headers=modal_proxy_headers(config.llm_url),
            context_tokens=config.context_tokens or None,
            function_call_timeout_secs=config.tool_timeout_secs,
            settings=BudgetedOpenAILLMService.Settings(
                model=config.llm_model,
                system_instruction=config.full_system_prompt,
                max_completion_tokens=config.max_tokens,
                temperature=config.temperature,
            ),
        )
    return LlamaServerLLMService(
        base_url=config.llm_url,
        server_wait_s=config.model_server_wait_s,
        interleaving=Interleaving(interleaver, waiting_segments=1 if config.interleave == "first" else None)
        if interleaver
        else None,
        warm_context=context,
        context_tokens=config.context_tokens or None,
        filler=CallFiller() if config.tool_filler else None,
        function_call_timeout_secs=config.tool_timeout_secs,
        settings=LLMSettings(
            system_instruction=config.full_system_prompt, max_tokens=config.max_tokens, temperature=config.temperature
        ),
    )


def backchannel_gate(config: BotConfig) -> BackchannelGate | None:
    """The gate that judges speech over the bot's, with the pacer that pauses it (`gate.speech`)."""
    if not config.pause_on_sound:
        return None
    phrases = BackchannelPhrases(config.backchannels.split(","))
    return BackchannelGate(
        phrases, BotSpeechPacer(), wait_s=config.backchannel_wait_secs, max_pause_s=config.pause_max_secs
    )


def user_turn_params(config: BotConfig, gate: BackchannelGate | None = None) -> LLMUserAggregatorParams:
    """Silero VAD starts speech (and interrupts the bot) after `vad_start_secs` of it and ends it after
    `vad_stop_secs` of silence; the turn ends when Smart Turn says it is complete, or `turn_hold_secs`
    after a final transcript that ends a sentence, else after `turn_fallback_secs` of silence. Speech
    before the turn's end continues it, its transcript decoded again whole. With a backchannel `gate`,
    speech over the bot's starts a turn by its words, not by the VAD. `idle_secs` of silence on both
    sides make the user idle."""
    start = (
        [QuietBotVADUserTurnStartStrategy(gate), TranscriptionUserTurnStartStrategy()]
        if gate
        else default_user_turn_start_strategies()
    )
    smart_turn = LocalSmartTurnAnalyzerV3(params=SmartTurnParams(stop_secs=config.turn_fallback_secs))
    return LLMUserAggregatorParams(
        vad_analyzer=SileroVADAnalyzer(
            params=VADParams(
                start_secs=config.vad_start_secs, stop_secs=config.vad_stop_secs, min_volume=VAD_MIN_VOLUME
            )
        ),
        user_turn_strategies=UserTurnStrategies(
            start=[ReopenedTranscriptUserTurnStartStrategy(), *start],
            stop=[
                BackgroundTurnAnalyzerUserTurnStopStrategy(turn_analyzer=smart_turn),
                SentenceEndUserTurnStopStrategy(hold_s=config.turn_hold_secs),
                KeypadUserTurnStopStrategy(),
            ],
        ),
        user_idle_timeout=config.idle_secs,
    )


def model_servers(config: BotConfig) -> ModelServers:
    """The servers a call uses; an OpenAI-compatible LLM is not ours to watch."""
    return ModelServers(config.asr_url, config.tts_url, config.llm_url if config.llm_api == "llama-server" else None)


def new_context(config: BotConfig, mcp: MCPToolbox | None = None) -> LLMContext:
    """A conversation's context: empty, with the configured tools, then the MCP servers' (a name
    already taken is skipped)."""
    tools: dict[str, FunctionSchema] = {}
    for tool in [*bot_tools(config.tool_names), *(mcp.tools if mcp else [])]:
        if tools.setdefault(tool.name, tool) is not tool:
            logger.warning(f"two tools are called {tool.name!r}: the first one is kept")
    return LLMContext(tools=ToolsSchema(standard_tools=list(tools.values()))) if tools else LLMContext()


async def connect_mcp(config: BotConfig) -> MCPToolbox | None:
    """The `--mcp` servers' tools for one call (or the warm-up); None without `--mcp`."""
    if not config.mcp:
        return None
    servers = read_mcp_servers(config.mcp)
    return await MCPToolbox.connect(
        servers, timeout_s=config.tool_timeout_secs, max_result_chars=config.mcp_result_chars
    )


async def add_mcp_tools(config: BotConfig, context: LLMContext, worker: PipelineWorker) -> MCPToolbox | None:
    """The call goes on while the MCP servers connect (a stdio server starts a process: seconds), and
    their tools join the context once they have (the client is told: `mcp_tools`); a turn before
    then has the bot's own tools."""
    mcp = await connect_mcp(config)
    if mcp and mcp.tools:
        context.set_tools(new_context(config, mcp).tools)
        names = [t.name for t in mcp.tools]
        logger.info(f"MCP tools ready: {', '.join(names)}")
        await worker.queue_frame(RTVIServerMessageFrame(data={"type": "mcp_tools", "tools": names}))
    return mcp


async def warm_llm(config: BotConfig) -> None:
    """Each call prefills the system prompt and tools when it starts, but on a fresh llama-server
    they take ≈4 s on two cores, so the first call after a start would wait for them on its first
    turn. Prefill them when the bot starts instead; later calls share the server's cached prefix."""
    mcp = await connect_mcp(config)
    llm = make_llm(config, None, new_context(config, mcp))
    try:
        if isinstance(llm, TokenLLMService):
            await llm.warm_server(config.model_server_wait_s)
            logger.info("LLM warmed: the system prompt and tools are in llama-server's cache")
    except Exception as e:
        logger.warning(f"LLM warm-up failed ({e}); the first call will prefill the system prompt")
    finally:
        if isinstance(llm, TokenLLMService):
            await llm.backend.close()
        if mcp:
            await mcp.close()


async def run_bot(
    transport: BaseTransport, config: BotConfig, *, handle_sigint: bool = False, phone_call: StreamStart | None = None
) -> None:
    """One call, to its end. A `phone_call` has 8 kHz audio out, keypad entries and its carrier's call id."""
    interleaver = Interleaver() if config.interleave != "off" and config.llm_api == "llama-server" else None
    context = new_context(config)
    stt = ASRServerSTTService(url=config.asr_url, server_wait_s=config.model_server_wait_s)
    llm = make_llm(config, interleaver, context)
    tts = TTSServerTTSService(
        url=config.tts_url, interleaver=interleaver,
        settings=TTSServerTTSService.Settings(voice=config.voice, language=config.language),
        server_wait_s=config.model_server_wait_s,
    )  # fmt: skip
    gate = backchannel_gate(config)
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context, user_params=user_turn_params(config, gate)
    )

    call_id = file_name(phone_call.call_id) if phone_call else uuid.uuid4().hex[:12]
    transcript = CallTranscript(Path(config.transcripts), call_id) if config.transcripts else None
    recording = (
        CallRecording(Path(config.transcripts) / f"{call_id}.wav") if transcript and config.record_audio else None
    )
    prefill = [InterimPrefill(llm)] if config.prefill_interims and isinstance(llm, TokenLLMService) else []
    keypad = [keypad_aggregator()] if phone_call else []
    ender = CallEnder(context, skipped_text_types=[FILLER_TEXT_TYPE])
    pipeline = Pipeline(
        [transport.input(), stt, *([gate] if gate else []), *keypad, *prefill, user_aggregator, llm, ender, tts,
         *([gate.speech] if gate else []), transport.output(), *([gate.speech.tap] if gate else []),
         *([recording.processor] if recording else []), assistant_aggregator]
    )  # fmt: skip

    latency = TurnLatencyObserver()
    params = PipelineParams(
        audio_in_sample_rate=16000,
        audio_out_sample_rate=PHONE_SAMPLE_RATE if phone_call else PipelineParams().audio_out_sample_rate,
        enable_metrics=True,
        enable_usage_metrics=True,
    )
    worker = PipelineWorker(
        pipeline,
        params=params,
        observers=[latency, *([transcript] if transcript else [])],
        enable_tracing=bool(config.otlp_endpoint),
        conversation_id=call_id,
    )
    mcp_connecting = asyncio.create_task(add_mcp_tools(config, context, worker))

    @latency.event_handler("on_turn_latency")
    async def on_turn_latency(_: TurnLatencyObserver, data: TurnLatencyMetricsData) -> None:
        message = {"type": "turn_latency", **data.model_dump()}
        await worker.queue_frames([MetricsFrame(data=[data]), RTVIServerMessageFrame(data=message)])
        tracing.on_turn_span(worker, data)
        if transcript:
            transcript.write("latency", **data.model_dump(exclude={"processor", "model"}))

    @user_aggregator.event_handler("on_user_turn_idle")
    async def on_user_turn_idle(_) -> None:
        await ender.user_idle()

    @user_aggregator.event_handler("on_user_turn_stopped")
    async def on_user_turn_stopped(_, __, message: UserTurnStoppedMessage) -> None:
        if message.content:
            ender.user_spoke()
            if transcript:
                transcript.write("user", text=message.content)

    @user_aggregator.event_handler("on_user_backchannel")
    async def on_user_backchannel(_, message: UserBackchannelMessage) -> None:
        if transcript:
            transcript.write("backchannel", text=message.content)

    @assistant_aggregator.event_handler("on_assistant_turn_stopped")
    async def on_assistant_turn_stopped(_, message: AssistantTurnStoppedMessage) -> None:
        """Tell the client what went into the context: after a barge-in, only the words heard."""
        logger.info(f"assistant{' (interrupted)' if message.interrupted else ''}: {message.content!r}")
        data = {"type": "assistant_turn", "text": message.content, "interrupted": message.interrupted}
        await worker.queue_frame(RTVIServerMessageFrame(data=data))
        if transcript:
            transcript.write("assistant", text=message.content, interrupted=message.interrupted)

    @transport.event_handler("on_client_connected")
    async def on_client_connected(*_) -> None:
        """A call during a load, a cold start or a restart hears "One moment, please." instead of silence.
        A user who never speaks is nudged like one who stopped."""
        await start_user_idle_timer(user_aggregator)
        if waiting := await model_servers(config).waiting_for():
            logger.info(f"call started while {', '.join(waiting)} loading: saying one moment")
            await worker.queue_frame(one_moment(params.audio_out_sample_rate))

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(*_) -> None:
        logger.info("client disconnected")
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=handle_sigint)
    await runner.add_workers(worker)
    try:
        await runner.run()
    finally:
        for record in (transcript, recording):
            if record:
                record.close()
        mcp_connecting.cancel()
        mcp = (await asyncio.gather(mcp_connecting, return_exceptions=True))[0]
        if isinstance(mcp, MCPToolbox):
            await mcp.close()


async def bot(runner_args: RunnerArguments) -> None:
    """Entry point for Pipecat's runner: one call per client session. A phone bot runs only the calls
    its own routes admitted (`serve_phone_calls`); a telephony stream on the runner's `/ws` has no token."""
    phone_bot = getattr(getattr(runner_args, "cli_args", None), "transport", None) in CARRIERS
    telephony = isinstance(runner_args, WebSocketRunnerArguments) and runner_args.transport_type != "websocket"
    if phone_bot or telephony:
        logger.warning(f"refused a {type(runner_args).__name__} session: phone calls come through -t twilio|telnyx")
        if isinstance(runner_args, WebSocketRunnerArguments):
            await runner_args.websocket.close(code=1008)
        elif connection := getattr(runner_args, "webrtc_connection", None):
            await connection.disconnect()
        return
    config = BotConfig.from_args(getattr(runner_args, "cli_args", None)).for_session(runner_args.body)
    tracing.export_to(config.otlp_endpoint)
    transport = await create_transport(runner_args, TRANSPORTS)
    await run_bot(transport, config, handle_sigint=runner_args.handle_sigint)


def serve_phone_calls(
    app: FastAPI, carrier_name: str, public_host: str | None, config: BotConfig, tokens: StreamTokens | None = None
) -> None:
    """The carrier's signed webhook and token-checked media stream on `app`, each call run here
    (`-t twilio|telnyx -x HOST`; on Modal, `public_host` None and tokens every container sees)."""
    carrier = CARRIERS[carrier_name]()
    tracing.export_to(config.otlp_endpoint)

    async def run_phone_call(websocket: WebSocket, serializer: FrameSerializer, start: StreamStart) -> None:
        transport = FastAPIWebsocketTransport(websocket, websocket_params(serializer))
        await run_bot(transport, config, phone_call=start)

    add_phone_routes(app, carrier, public_host, run_phone_call, tokens)


def runner_transport() -> tuple[str | None, str | None]:
    """The runner's `-t` and `-x` (it parses them itself, later)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-t", "--transport")
    parser.add_argument("-x", "--proxy")
    args = parser.parse_known_args()[0]
    return args.transport, args.proxy and args.proxy.removeprefix("https://").removeprefix("http://").rstrip("/")


if __name__ == "__main__":
    from pipecat.runner.run import app, main

    parser = add_bot_flags(argparse.ArgumentParser(description="Self-hosted voice agent (Pipecat runner)"))
    startup_config = BotConfig.from_args(parser.parse_known_args()[0])
    transport_name, public_host = runner_transport()
    try:
        if startup_config.mcp:
            read_mcp_servers(startup_config.mcp)
        if transport_name in CARRIERS and not public_host:
            raise PhoneSetupError(f"{transport_name} calls need -x HOST: the public host name the carrier reaches")
        if transport_name in CARRIERS:
            serve_phone_calls(app, transport_name, public_host, startup_config)
    except (MCPConfigError, PhoneSetupError) as e:
        raise SystemExit(f"bot: {e}") from None
    add_warming_up_routes(app, model_servers(startup_config))
    threading.Thread(target=asyncio.run, args=(warm_llm(startup_config),), name="warm-llm", daemon=True).start()
    main(parser)
