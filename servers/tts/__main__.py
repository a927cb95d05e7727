"""`python -m servers.tts`."""

from servers.tts.server import main

main()
