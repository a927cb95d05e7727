from servers.tts.server import main

main()
