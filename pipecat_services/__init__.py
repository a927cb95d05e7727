"""Pipecat services and processors for our model servers, and the bot's per-turn plumbing."""
