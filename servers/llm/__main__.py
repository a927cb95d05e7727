from servers.llm.server import main

main()
