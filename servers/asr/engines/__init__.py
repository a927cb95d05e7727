"""ASR engines behind one interface (`base.py`): Whisper on the CPU, Nemotron Speech on a GPU."""
