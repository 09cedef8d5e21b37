"""The relay app under waitress, bound to exactly the address it is given."""

from __future__ import annotations

import ipaddress
import threading
from typing import Any

from flask import Flask

from onetimechat.serving import Guard, guarded_server
from relay.config import RelayConfig
from relay.errors import ConfigError

DEFAULT_THREADS = 128


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, HOST a literal IP address (or localhost, which is 127.0.0.1); [::1]:PORT for IPv6."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError("--listen takes HOST:PORT, such as 127.0.0.1:8080 or [::1]:8080.")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError("--listen needs a literal IP address (such as 127.0.0.1 or 0.0.0.0), not a name; "
                          "the relay binds exactly that address.") from None
    return str(address), int(port_text)


def _channel_class() -> type:
    from waitress.channel import HTTPChannel

    class RelayChannel(HTTPChannel):
        """waitress's connection, minus a busy loop.

        While a request's task runs, it sends its own output (``write_soon`` flushes). If
        the main loop also polls the socket for writing then, ``poll`` returns at once on
        every pass but the loop may not touch the buffer the task holds: it spins, and the
        interpreter lock it keeps taking is the one the task needs to finish. With 100
        connections that spin cost the relay three quarters of its CPU. So the loop only
        asks to write when no task runs (it flushes leftovers once the task ends; waitress
        wakes it then), when output piles past the high watermark (the task is waiting for
        the loop), or when the connection is closing.
        """

        def writable(self) -> bool:
            if self.requests and not (self.will_close or self.close_when_flushed) \
                    and self.total_outbufs_len <= self.adj.outbuf_high_watermark:
                return False
            return bool(super().writable())

    return RelayChannel


class RelayServer:
    """Serve ``app`` on one address. ``start()`` runs it in a thread (tests, benchmarks)."""

    def __init__(self, app: Flask, host: str, port: int, threads: int = DEFAULT_THREADS,
                 trusted_proxy: str | None = None) -> None:
        config: RelayConfig = app.extensions["otc_relay"].config
        proxy: dict[str, Any] = {}
        if trusted_proxy:
            # The load balancer's X-Forwarded-For names the client, for rate limits.
            proxy = {"trusted_proxy": trusted_proxy, "trusted_proxy_count": 1,
                     "trusted_proxy_headers": {"x-forwarded-for"}}
        self.app = app
        # One address holds at most so many connections and must send its headers in time
        # (onetimechat/serving.py); a trusted proxy carries many clients, so it is not capped.
        guard = Guard(per_address=config.connections_per_address or 1 << 30, header_timeout=config.header_timeout,
                      request_timeout=config.request_timeout,
                      exempt=frozenset({trusted_proxy}) if trusted_proxy else frozenset())
        self.server = guarded_server(
            app, host, port, guard, channel_class=_channel_class(), threads=threads, ident="otc-relay",
            # Long polls hold a thread each and a connection; leave room for both.
            connection_limit=max(1000, 4 * threads), backlog=1024,
            channel_timeout=int(config.max_wait) + 60,
            # Up to twice the app's limit the app answers 413 in JSON; beyond, waitress does.
            max_request_body_size=2 * config.max_request_bytes(),
            clear_untrusted_proxy_headers=True, **proxy)
        self.host = host
        self.port = int(self.server.effective_port)  # type: ignore[union-attr]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        self.server.run()

    def start(self) -> RelayServer:
        self._thread = threading.Thread(target=self.run, name="otc-relay-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop accepting, wake waiting requests, stop the server and close the store."""
        from waitress import wasyncore

        relay = self.app.extensions["otc_relay"]
        relay.notifier.close()  # long polls answer now
        server = self.server
        dispatcher = server.task_dispatcher  # type: ignore[union-attr]
        # Let running requests finish: a worker still running after the sockets close would
        # fail to wake the (closed) loop.
        dispatcher.shutdown(timeout=30)
        if self._thread is not None and self._thread.is_alive():
            # Close every socket (keep-alive connections too) inside the server's own loop,
            # which then finds nothing left to serve and returns at once.
            try:
                server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))  # type: ignore[union-attr]
            except OSError:
                wasyncore.close_all(server._map)  # type: ignore[union-attr]
            self._thread.join(timeout=10)
        else:
            wasyncore.close_all(server._map)  # type: ignore[union-attr]
        relay.close()
