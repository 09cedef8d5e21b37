"""Numbers the command line shows in its help, kept apart so that `otc ... --help` imports no network code."""

MAX_WAIT = 60  # seconds the relay waits for a message in one request (client.relay.MAX_WAIT_S)
