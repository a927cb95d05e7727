"""The LLM path."""
