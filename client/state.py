"""The client's own state: pairing credentials and call counters.

It lives in ``$OTC_CLIENT_HOME``, by default the platform's user config
directory. One file per paired device (mode 0600), named by a hash of the
device URL. The pairing key authenticates this laptop to its device; it is
not a pad key and opens no message.

``config.json`` remembers the rest: which paired device to use when
``--device`` is left out and the last relay given with ``--relay``, so both
flags are needed once, not on every command. A device may be named by its
name (``alice``) or by any spelling of its URL (``localhost`` or
``127.0.0.1``, with or without ``http://``, a trailing slash or the default
port): each resolves to the URL it was paired under.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from client.errors import NotPaired
from onetimechat.errors import UsageError

if TYPE_CHECKING:
    from onetimechat.rpc import Keys

CONFIG = "config.json"
COUNTER_BYTES = 8  # the last counter used with a device, then its ceiling, big-endian, in ``<device>.counter``
COUNTER_BLOCK = 1 << 20  # counters reserved at a time (one sync each): about a second of the clock's microseconds


def client_home() -> Path:
    env = os.environ.get("OTC_CLIENT_HOME")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir("onetimechat"))


HOME_HELP = ("This laptop's state (pairing keys, the remembered device and relay, the outbox) lives in "
             "$OTC_CLIENT_HOME, by default the user config folder ({}).")


def home_help() -> str:
    """One sentence for --help saying where the client keeps its state."""
    import platformdirs

    return HOME_HELP.format(platformdirs.user_config_dir("onetimechat"))


def normalise_url(url: str) -> str:
    return url.strip().rstrip("/")


def _looks_like_http(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    host = parts.hostname or ""
    return parts.scheme in ("http", "https") and bool(re.fullmatch(r"[A-Za-z0-9._:\-]+", host))


def canonical_url(url: str) -> str:
    """A URL's identity: scheme added if missing, case and default port dropped, localhost as 127.0.0.1."""
    from urllib.parse import urlsplit

    text = normalise_url(url)
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if host == "localhost":
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path.rstrip('/')}"


@dataclass(frozen=True)
class Credentials:
    url: str
    client_id: bytes
    key: bytes
    name: str
    device_name: str

    @property
    def keys(self) -> Keys:
        from onetimechat.rpc import Keys  # the crypto loads when a call is made, not for --help

        return Keys.from_pairing_key(self.key)


class ClientState:
    def __init__(self, home: Path | None = None) -> None:
        self.home = home or client_home()
        self._recorded: dict[str, int] = {}  # the counter each credentials file holds (next_counter)
        self._reserved: set[str] = set()  # the devices this process has reserved a block of counters for

    # -- what the laptop remembers ----------------------------------------------------

    def paired(self) -> list[Credentials]:
        """Every device this laptop is paired with, by name."""
        found = []
        for path in sorted((self.home / "devices").glob("*.json")):
            try:
                found.append(_read_credentials(path))
            except (OSError, ValueError, KeyError):
                continue
        return sorted(found, key=lambda c: (c.device_name, c.url))

    def config(self) -> dict:
        try:
            data = json.loads((self.home / CONFIG).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def remember(self, **values: str | None) -> None:
        path = self.home / CONFIG
        with self._locked(path):
            data = self.config()
            for key, value in values.items():
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value
            _write(path, data)

    def relay_answered(self, url: str) -> None:
        """Remember ``url`` as the relay to use when --relay is left out: it has just answered."""
        if self.config().get("relay") != url:
            self.remember(relay=url)

    def resolve_device(self, given: str | None) -> str:
        """The URL a device was paired under, from its name, any spelling of its URL, or nothing.

        Nothing means the device chosen with `otc client use`, or the only one paired.
        """
        paired = self.paired()
        if given is None or not given.strip():
            chosen = self.config().get("device")
            if chosen and any(c.url == chosen for c in paired):
                return str(chosen)
            if len(paired) == 1:
                return paired[0].url
            if not paired:
                raise NotPaired("This laptop is paired with no device yet: run `otc client pair --device URL` "
                                "(the URL the device's screen shows).")
            names = ", ".join(c.device_name for c in paired)
            raise NotPaired(f"This laptop is paired with several devices ({names}): name one with --device NAME, "
                            "or choose one with `otc client use NAME`.")
        given = given.strip()
        by_name = [c for c in paired if c.device_name == given]
        if len(by_name) == 1:
            return by_name[0].url
        if len(by_name) > 1:
            urls = ", ".join(c.url for c in by_name)
            raise NotPaired(f"Several paired devices are named {given} ({urls}): give the URL with --device.")
        wanted = canonical_url(given)
        for creds in paired:
            if canonical_url(creds.url) == wanted:
                return creds.url
        if "://" not in given and ":" not in given and "/" not in given:
            # Not a URL (no scheme, no port): a device name, and no paired device has it.
            names = ", ".join(c.device_name for c in paired) or "none yet"
            raise NotPaired(f"No paired device is named {given!r} (paired: {names}); `otc client` lists them, "
                            "`otc client pair --device URL` pairs another.")
        return wanted if "://" not in given else normalise_url(given)

    def resolve_relay(self, given: str | None) -> str:
        """The relay given now, or the one remembered (a relay is remembered once it has answered:
        :meth:`relay_answered`, so a mistyped one is not kept)."""
        if given is not None and given.strip():
            url = canonical_url(given) if "://" not in given else normalise_url(given)
            if not _looks_like_http(url):
                raise UsageError(f"A relay URL looks like http://HOST:PORT, not {given.strip()[:60]!r}.")
            return url
        remembered = self.config().get("relay")
        if not remembered:
            raise NotPaired("No relay given and none remembered: pass --relay URL once (it is remembered).")
        return str(remembered)

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
        try:
            return _read_credentials(self._path(url))
        except (OSError, ValueError, KeyError):
            raise NotPaired(
                f"This laptop is not paired with {normalise_url(url)}; run `otc client pair --device {url}` first."
            ) from None

    def next_counter(self, url: str) -> int:
        """A counter above every one this laptop used with ``url``, across processes and power cuts.

        Counters follow the clock in microseconds and never go below the last one used. The file beside the
        credentials (``<device>.counter``: the last counter used, then a ceiling, 8 bytes each, big-endian,
        written in place under a lock) reserves them in blocks: every counter used is at most the ceiling, and
        the ceiling is durable (fdatasync) before any counter under it is used. A process's first counter, and
        any past the ceiling, goes above the ceiling and raises it by COUNTER_BLOCK, synced; within the block no
        sync. So after a power cut (the last counter lost, the clock stepped back) the next is above them all.
        Before the red team of issue 24: 8 bytes never synced, and "counters follow the clock" the only guard;
        a lost write plus a clock stepped back repeated a counter, the request's nonce. Before issue 24's speed
        work the credentials file (the pairing key with it) was rewritten on every call; the counter it holds
        from then still counts (read once a process).
        """
        from onetimechat.rpc import MAX_COUNTER

        path = self._path(url)
        if url not in self._recorded:
            try:
                self._recorded[url] = int(json.loads(path.read_text()).get("counter", 0))
            except (OSError, ValueError, AttributeError):
                self._recorded[url] = 0
        fd = os.open(path.with_suffix(".counter"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, 2 * COUNTER_BYTES, 0)
            last = int.from_bytes(raw[:COUNTER_BYTES], "big") if len(raw) >= COUNTER_BYTES else 0  # new: 0
            # An 8-byte file (an older otc's) has no ceiling: its last counter stands for one.
            ceiling = int.from_bytes(raw[COUNTER_BYTES:], "big") if len(raw) == 2 * COUNTER_BYTES else last
            counter = max(last + 1, self._recorded[url] + 1, time.time_ns() // 1000)
            if url not in self._reserved:  # the last process may have died past its last write: skip its block
                counter = max(counter, ceiling + 1)
            if counter > MAX_COUNTER:
                raise ValueError("counter space exhausted")
            raised = counter > ceiling
            if raised:
                ceiling = min(counter + COUNTER_BLOCK, MAX_COUNTER)
            os.pwrite(fd, counter.to_bytes(COUNTER_BYTES, "big") + ceiling.to_bytes(COUNTER_BYTES, "big"), 0)
            if raised:  # the ceiling durable before any counter under it goes out
                os.fdatasync(fd)
                if not raw:  # a new file: its name too
                    _sync_dir(path.parent)
                self._reserved.add(url)
        finally:
            os.close(fd)  # and the lock with it
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


def _read_credentials(path: Path) -> Credentials:
    """One paired device's record; OSError, ValueError or KeyError if it is missing or damaged."""
    record = json.loads(path.read_text())
    return Credentials(url=record["url"], client_id=bytes.fromhex(record["client_id"]),
                       key=base64.b64decode(record["key"]), name=record["name"], device_name=record["device_name"])


def _write(path: Path, record: dict) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def _sync_dir(path: Path) -> None:
    """Make the names in the directory ``path`` durable (a new file's among them)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
