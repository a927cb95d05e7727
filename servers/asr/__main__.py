from servers.asr.server import main

main()
