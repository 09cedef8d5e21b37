"""The relay app under waitress, bound to exactly the address it is given (onetimechat/serving.py serves it)."""

from __future__ import annotations

import socket
from typing import Any

from flask import Flask

from onetimechat import net
from onetimechat.serving import Guard, GuardedServer
from relay.config import RelayConfig
from relay.errors import ConfigError

DEFAULT_THREADS = 128


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, HOST a literal IP address (or localhost, which is 127.0.0.1); [::1]:PORT for IPv6."""
    return net.parse_listen(text, "127.0.0.1:8080 or [::1]:8080", "such as 127.0.0.1 or 0.0.0.0", ConfigError,
                            localhost=True)


class RelayServer(GuardedServer):
    """Serve ``app`` on one address. ``start()`` runs it in a thread (tests, benchmarks). With ``sock``, serve
    that listening socket, shared with other worker processes (relay/workers.py)."""

    def __init__(self, app: Flask, host: str, port: int, threads: int = DEFAULT_THREADS,
                 trusted_proxy: str | None = None, sock: socket.socket | None = None) -> None:
        config: RelayConfig = app.extensions["otc_relay"].config
        proxy: dict[str, Any] = {}
        if trusted_proxy:
            # The load balancer's X-Forwarded-For names the client, for rate limits.
            proxy = {"trusted_proxy": trusted_proxy, "trusted_proxy_count": 1,
                     "trusted_proxy_headers": {"x-forwarded-for"}}
        # One address holds at most so many connections and must send its headers in time
        # (onetimechat/serving.py); a trusted proxy carries many clients, so it is not capped.
        guard = Guard(per_address=config.connections_per_address or 1 << 30, header_timeout=config.header_timeout,
                      request_timeout=config.request_timeout,
                      exempt=frozenset({trusted_proxy}) if trusted_proxy else frozenset())
        super().__init__(
            app, host, port, guard, name="otc-relay-server", sock=sock, threads=threads, ident="otc-relay",
            # Long polls hold a thread each and a connection; leave room for both.
            connection_limit=max(1000, 4 * threads), backlog=1024,
            channel_timeout=int(config.max_wait) + 60,
            # Up to twice the app's limit the app answers 413 in JSON; beyond, waitress does.
            max_request_body_size=2 * config.max_request_bytes(),
            clear_untrusted_proxy_headers=True,
            # A file's part (1 MiB raw, 1.4 MB in base64) is read and answered in memory, in 256 KiB reads: by
            # default waitress reads 8 KiB at a time and spools bodies above 512 KB, and answers above 1 MiB, to
            # temporary files (docs/attachments.md, "Speed").
            recv_bytes=256 * 1024, inbuf_overflow=2 * 1024 * 1024, outbuf_overflow=8 * 1024 * 1024,
            **proxy)

    def wake(self) -> None:
        """Long polls answer now (their empty answer, or what arrived), as the server stops."""
        self.app.extensions["otc_relay"].notifier.close()

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking connections, wake waiting requests, let running ones answer, stop the server and close the
        store."""
        super().close(timeout)
        self.app.extensions["otc_relay"].close()
