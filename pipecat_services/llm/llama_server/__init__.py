"""llama-server."""
