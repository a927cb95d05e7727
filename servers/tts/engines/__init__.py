"""TTS engines behind one interface (`base.py`): Piper on the CPU, Magpie on a GPU."""
