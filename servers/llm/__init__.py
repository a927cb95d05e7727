"""llama.cpp's llama-server with our packaged models: `python -m servers.llm`."""
