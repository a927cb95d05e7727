"""The streaming TTS server: `python -m servers.tts`."""
