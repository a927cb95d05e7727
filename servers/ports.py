"""The default ports of our processes, defined once: servers, clients, the launcher, compose and Modal
use these (`tests/test_settings.py` checks the files that cannot import them)."""

ASR_PORT = 8080
"""ASR server: WebSocket and GET /health."""
TTS_PORT = 8001
"""TTS server: WebSocket and GET /health."""
LLM_PORT = 8002
"""llama-server: HTTP."""
BOT_PORT = 7860
"""The bot: Pipecat's runner, the Playground at /client."""
