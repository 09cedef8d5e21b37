"""The client's own state: pairing credentials and call counters.

It lives in ``$OTC_CLIENT_HOME``, by default the platform's user config
directory. One file per paired device (mode 0600), named by a hash of the
device URL. The pairing key authenticates this laptop to its device; it is
not a pad key and opens no message.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from client.errors import NotPaired
from onetimechat.rpc import MAX_COUNTER, Keys


def client_home() -> Path:
    env = os.environ.get("OTC_CLIENT_HOME")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir("onetimechat"))


def normalise_url(url: str) -> str:
    return url.strip().rstrip("/")


@dataclass(frozen=True)
class Credentials:
    url: str
    client_id: bytes
    key: bytes
    name: str
    device_name: str

    @property
    def keys(self) -> Keys:
        return Keys.from_pairing_key(self.key)


class ClientState:
    def __init__(self, home: Path | None = None) -> None:
        self.home = home or client_home()

    def _path(self, url: str) -> Path:
        digest = hashlib.sha256(normalise_url(url).encode()).hexdigest()[:24]
        return self.home / "devices" / f"{digest}.json"

    def save(self, creds: Credentials) -> None:
        path = self._path(creds.url)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        record = {
            "url": normalise_url(creds.url),
            "client_id": creds.client_id.hex(),
            "key": base64.b64encode(creds.key).decode(),
            "name": creds.name,
            "device_name": creds.device_name,
            "counter": 0,
        }
        with self._locked(path):
            try:
                old = json.loads(path.read_text())
                if old.get("client_id") == record["client_id"]:
                    record["counter"] = int(old.get("counter", 0))  # counters never go back
            except (OSError, ValueError):
                pass
            _write(path, record)

    def load(self, url: str) -> Credentials:
        path = self._path(url)
        try:
            record = json.loads(path.read_text())
            return Credentials(
                url=record["url"],
                client_id=bytes.fromhex(record["client_id"]),
                key=base64.b64decode(record["key"]),
                name=record["name"],
                device_name=record["device_name"],
            )
        except (OSError, ValueError, KeyError):
            raise NotPaired(
                f"This laptop is not paired with {normalise_url(url)}; run `otc client pair --device {url}` first."
            ) from None

    def next_counter(self, url: str) -> int:
        """A counter above every one this laptop used with ``url``, across processes.

        Counters follow the clock in microseconds (so a lost write cannot make
        one repeat) and never go below the last one used.
        """
        path = self._path(url)
        with self._locked(path):
            record = json.loads(path.read_text())
            counter = max(int(record.get("counter", 0)) + 1, time.time_ns() // 1000)
            if counter > MAX_COUNTER:
                raise ValueError("counter space exhausted")
            record["counter"] = counter
            _write(path, record)
        return counter

    @contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _write(path: Path, record: dict) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)
