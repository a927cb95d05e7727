"""The streaming ASR server: `python -m servers.asr`."""
