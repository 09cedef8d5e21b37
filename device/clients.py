"""Paired laptops: the device's registry of clients allowed to call its RPC."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from device.storage.clients_tables import ClientTable
from device.storage.padstore import PadStore, check_name
from onetimechat.rpc import Keys


@dataclass(frozen=True)
class PairedClient:
    client_id: bytes
    name: str
    keys: Keys
    created: float
    last_used: float | None
    revoked: float | None

    def to_dict(self) -> dict:
        """What may be shown about a client (never its key)."""
        return {
            "client_id": self.client_id.hex(),
            "name": self.name,
            "created": _iso(self.created),
            "last_used": _iso(self.last_used),
            "revoked": _iso(self.revoked),
        }


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class ClientRegistry:
    """Paired clients, their keys and their call counters, in the device store."""

    def __init__(self, store: PadStore) -> None:
        self.store = store
        self.table = ClientTable(store)

    def add(self, name: str, key: bytes) -> bytes:
        """Store a newly paired client; return its id."""
        check_name(name)
        client_id = secrets.token_bytes(16)
        stored = self.store.secrets.seal(key, client_id) if self.store.secrets else key
        self.table.add(client_id, name, stored)
        return client_id

    def get(self, client_id: bytes) -> PairedClient | None:
        """An active (not revoked) client, or None."""
        row = self.table.active(client_id)
        return self._client(row) if row is not None else None

    def might_accept(self, client_id: bytes, counter: int) -> bool:
        """Whether a call from ``client_id`` with ``counter`` could pass, judged before its body is read: the
        client is paired and not revoked, and the counter is above the last one accepted. One read, no write;
        :meth:`accept_counter` still decides, once the call authenticates."""
        last = self.table.last_counter(client_id)
        return last is not None and last < counter

    def accept_counter(self, client_id: bytes, counter: int, durable: bool = True) -> bool:
        """Record ``counter`` as the client's latest, if it is above every earlier one.

        Atomic and durable: of two calls with one counter, exactly one passes,
        and a restart cannot roll the counter back. With ``durable=False`` the
        record is not synced by itself: the caller makes it durable (the store's
        next durable commit does, or ``store.make_durable()``) before it answers.
        """
        return self.table.accept_counter(client_id, counter, durable)

    def list(self) -> list[PairedClient]:
        return [self._client(r) for r in self.table.rows()]

    def find(self, prefix: str) -> PairedClient | None:
        """The one client whose id starts with ``prefix`` (hex), if exactly one does."""
        prefix = prefix.lower()
        matches = [c for c in self.list() if c.client_id.hex().startswith(prefix)] if prefix else []
        return matches[0] if len(matches) == 1 else None

    def revoke(self, client_id: bytes, how: str | None = None) -> bool:
        return self.table.revoke(client_id, how)

    def _client(self, row: tuple) -> PairedClient:
        client_id, stored = bytes(row[0]), bytes(row[2])
        key = self.store.secrets.open(stored, client_id) if self.store.secrets else stored
        return PairedClient(
            client_id=client_id,
            name=row[1],
            keys=Keys.from_pairing_key(key),
            created=row[3],
            last_used=row[4],
            revoked=row[5],
        )
