"""`python -m servers.llm`."""

from servers.llm.server import main

main()
