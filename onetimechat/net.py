"""Network helpers shared by the servers: what a failure to listen means, and whom an address stands for.

**Client addresses** (issue 19). A per-address cap or budget is only as strong as the cost of a new
address. An IPv4 host usually has one; an IPv6 subscriber gets a /64 at least (a /56, 256 /64s, is common,
and a /48, 65,536 /64s, is what a site gets), and every address in it is its own. So the servers count:

* IPv4 clients by address (``198.51.100.7``);
* IPv4-mapped IPv6 (``::ffff:198.51.100.7``, what a dual-stack socket reports) as the IPv4 address it is;
* other IPv6 clients by their /64 (:func:`client_group`), the block one host or subscriber gets, and
  besides, by their /48 (:func:`client_block`), which caps what a subscriber holding many /64s can gather:
  an aggregate of a few /64s' worth (:data:`BLOCK_SHARES`), not 256 or 65,536 of them.

IPv4 has no block: a client with many IPv4 addresses pays for each, and a /24 is often one NAT of many
people. The same grouping is used by the connection caps (``onetimechat/serving.py``), the relay's rate
limits, stored-bytes budgets, new-mailbox limits and presence limits.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
from collections.abc import Callable

REASONS = {
    errno.EADDRINUSE: "another program already listens there (choose another port, or stop it)",
    errno.EADDRNOTAVAIL: "that address is not one of this machine's",
    errno.EACCES: "permission denied (ports below 1024 need root)",
    errno.EPERM: "permission denied (ports below 1024 need root)",
}

#: How many /64s' worth of a per-address cap or budget one /48 may use together.
BLOCK_SHARES = 4


def listen_failure(address: str, exc: OSError) -> str:
    """``Cannot listen on ADDRESS: <reason>.`` for an OSError raised by bind/listen."""
    reason = REASONS.get(exc.errno or 0) or exc.strerror or type(exc).__name__
    return f"Cannot listen on {address}: {reason}."


def parse_listen(text: str, example: str, address: str, error: Callable[[str], Exception] = ValueError,
                 localhost: bool = False, wildcard: str | None = None) -> tuple[str, int]:
    """A server's ``--listen HOST:PORT`` (``[::1]:PORT`` for IPv6) as (address, port), HOST a literal IP address.

    ``example`` and ``address`` go in the messages (``such as {example}``, ``a literal IP address ({address})``);
    ``localhost`` reads as 127.0.0.1 if allowed; a wildcard address (0.0.0.0, ::) is refused with the message
    ``wildcard`` if that is given. Refusals raise ``error(message)``.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise error(f"--listen takes HOST:PORT, such as {example}.")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if localhost and host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise error(f"--listen needs a literal IP address ({address}), not a name: the server binds exactly "
                    "that address.") from None
    if wildcard is not None and ip.is_unspecified:
        raise error(wildcard)
    return str(ip), int(port_text)


def _ip(address: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # a scope (fe80::1%eth0) names no other host
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@functools.lru_cache(maxsize=4096)
def client_keys(address: str | None) -> tuple[str, str | None]:
    """``(client_group(address), client_block(address))``, remembered for the busiest addresses (every request
    asks)."""
    return client_group(address), client_block(address)


def client_group(address: str | None) -> str:
    """The key one client is counted under: an IPv4 address, or an IPv6 /64 (``2001:db8:1:2::/64``)."""
    ip = _ip(address)
    if ip is None:
        return (address or "-")[:64]  # not an IP address (a Unix socket, a test client): as given
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def client_block(address: str | None) -> str | None:
    """The IPv6 /48 a client's /64 lies in (``2001:db8:1::/48``), counted as a whole; None for IPv4."""
    ip = _ip(address)
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    return str(ipaddress.IPv6Network((int(ip) >> 80 << 80, 48)))
