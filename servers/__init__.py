"""The model servers (ASR, TTS, LLM) and what they share: CLI, serving loop, auth, metrics, processes."""
