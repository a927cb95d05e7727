"""`python -m servers.asr`."""

from servers.asr.server import main

main()
