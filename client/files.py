"""Files through a paired device and a relay, on the laptop (docs/attachments.md).

Sending (:func:`send_file`): the laptop hashes the file, the device asks its owner to confirm the file's
name, size and fingerprint and seals its header under the pad, then the laptop feeds the file to the
device part by part and hands each sealed part to the relay. Parts go to the relay with an idempotency key
per part, so a send cut anywhere resumes (the same command again) from what the relay has taken; what the
laptop remembers between runs is which parts the relay took, never a byte of the file.

Receiving (:class:`IncomingFiles`): the device opens the header and each part in order; the laptop writes
the bytes into a temporary file in the downloads folder, synced before the relay is told it may delete the
part, and only when the device has opened the last part and the whole file matches its SHA-256 does the file
take its final name: the sender's name made safe, never overwriting anything.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import queue
import re
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from client.errors import ClientError, FileSaveError, FileSendError, RelayUnavailable, RemoteError
from client.mailstore import MailStore
from client.relay import RelayClient
from client.rpc import DeviceClient
from onetimechat import attachment as att
from onetimechat.errors import FileNameRefused

OUT, IN = "file-out:", "file-in:"
TEMP_PREFIX = ".otc-"
TEMP_SUFFIX = ".partial"
RELAY_PATIENCE_S = 120.0  # how long a send waits for a relay that takes nothing (full, down) before it stops
PIPELINE = 4  # parts sealed ahead of the relay
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

Progress = Callable[[int, int], None]  # (bytes done, total)


class FileVanished(FileSendError):
    """The file vanished while it was being sent."""

    code = "file-vanished"


class FileChangedLocally(FileSendError):
    """The file changed while it was being sent."""

    code = "file-changed"


class DiskFull(FileSaveError):
    """No space left to save a file received."""

    code = "disk-full"


class FileCorrupt(FileSaveError):
    """A file received does not match its fingerprint."""

    code = "file-corrupt"


# -- sending ---------------------------------------------------------------------------------------------------


@dataclass
class Sent:
    file_id: str
    name: str
    size: int
    parts: int
    contact: str
    resumed: bool
    sha256: str


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def relay_send(relay: RelayClient, mailbox: str, contents: str | bytes, message_id: str,
               patience: float = RELAY_PATIENCE_S, stop: threading.Event | None = None) -> int:
    """Hand ``contents`` (text, or a part's raw bytes) to the relay, retrying (same idempotency key) while it is
    busy, full or away."""
    started = time.monotonic()
    pause = 0.05
    while True:
        try:
            if isinstance(contents, bytes):
                return relay.send_raw(mailbox, contents, message_id)
            return relay.send(mailbox, contents, message_id)
        except RelayUnavailable:
            if time.monotonic() - started > patience or (stop is not None and stop.is_set()):
                raise FileSendError(f"The relay at {relay.url} has taken nothing for {int(patience)} s (it is down, "
                                    "or full until the contact receives): run the same command again to "
                                    "resume.") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.5)  # a full mailbox frees as the contact receives: look again soon


def send_file(device: DeviceClient, relay: RelayClient, store: MailStore, contact: str, path: str | os.PathLike,
              otp: bool = False, progress: Progress | None = None, hashing: Progress | None = None,
              patience: float = RELAY_PATIENCE_S) -> Sent:
    """Send the file at ``path`` to ``contact`` (the device asks its owner first), or resume its send."""
    where = Path(path)
    try:
        # Non-blocking: opening a FIFO (or a device) for reading may wait for a writer forever. It is refused
        # below as not a regular file; a regular file's reads never block anyway.
        fd = os.open(where, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise FileSendError(f"Cannot read {where}: {exc.strerror or 'unreadable'}.") from None
    handle = os.fdopen(fd, "rb")  # closed below, and read from a worker thread
    with handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise FileSendError(f"{where} is not a regular file.")
        try:
            name = att.check_name(where.name)
        except FileNameRefused:
            raise FileSendError(f"{FileNameRefused.user_text()} Rename the file and send it again.") from None
        key = str(where.resolve())
        record = _find_outgoing(device, store, key, contact, _identity(st), otp)
        resumed = record is not None
        if record is None:
            sha256 = _hash(handle, st.st_size, hashing).digest()
            _check_unchanged(where, st)
            answer = device.call("file_begin", contact=contact, name=name, size=st.st_size, sha256=sha256.hex(),
                                 otp=otp)
            header = answer["file"]
            record = {"path": key, "contact": contact, "identity": _identity(st), "otp": otp, "id": header["id"],
                      "name": name, "size": st.st_size, "sha256": header["sha256"], "parts": header["parts"],
                      "part_size": header["part_size"], "mailbox": answer["mailbox"], "sent": -1,
                      "header": base64.b64encode(answer["package"]).decode("ascii")}
            store.set_setting(OUT + record["id"], json.dumps(record))
        file_id = str(record["id"])
        if record["sent"] < 0:
            relay_send(relay, record["mailbox"], record["header"], f"file-{file_id}-h", patience)
            record["sent"], record["header"] = 0, ""
            store.set_setting(OUT + file_id, json.dumps(record))
        try:
            if int(record["sent"]) < int(record["parts"]):
                _send_parts(device, relay, store, handle, where, st, record, progress, patience)
        except (FileChangedLocally, RemoteError) as exc:
            if isinstance(exc, RemoteError) and exc.code == "file-unknown" and resumed:
                # The device ended this send (a run cut after it forgot the key): the relay never got all of
                # it, so the file goes again, as a new file.
                store.delete_setting(OUT + file_id)
                return send_file(device, relay, store, contact, path, otp, progress, hashing, patience)
            if isinstance(exc, FileChangedLocally) or exc.code == "file-changed":
                _abandon(device, store, file_id)
                raise FileChangedLocally(f"{where} changed while it was being sent: nothing more of it is sent "
                                         f"(the contact never gets an incomplete file). Send it again.") from None
            raise
        try:
            device.call("file_end", file=file_id)  # the device forgets the file's key
        except ClientError:
            pass  # every part is on the relay; the record stays, so the same command again ends the key
        else:
            store.delete_setting(OUT + file_id)
        return Sent(file_id, name, int(record["size"]), int(record["parts"]), contact, resumed,
                    str(record["sha256"]))


def _find_outgoing(device: DeviceClient, store: MailStore, key: str, contact: str, identity: list[int],
                   otp: bool) -> dict | None:
    for value in store.settings_with_prefix(OUT).values():
        record = json.loads(value)
        if record["path"] == key and record["contact"] == contact and record["otp"] == otp:
            if record["identity"] == identity:
                return record
            _abandon(device, store, str(record["id"]))  # the file changed since: that send can never finish
    return None


def _abandon(device: DeviceClient, store: MailStore, file_id: str) -> None:
    store.delete_setting(OUT + file_id)
    try:
        device.call("file_end", file=file_id)
    except ClientError:
        pass


def _hash(handle: BinaryIO, size: int = 0, hashing: Progress | None = None) -> hashlib._Hash:
    """The SHA-256 of what ``handle`` reads to its end (``hashing`` told as it goes)."""
    h = hashlib.sha256()
    done = 0
    if hashing is not None:
        hashing(0, size)
    while chunk := handle.read(4 << 20):
        h.update(chunk)
        done += len(chunk)
        if hashing is not None:
            hashing(done, size)
    return h


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, in hex (as ``sha256sum`` prints it)."""
    with open(path, "rb") as f:
        return _hash(f).hexdigest()


def _check_unchanged(where: Path, st: os.stat_result) -> None:
    try:
        now = os.stat(where)
    except FileNotFoundError:
        raise FileVanished(f"{where} vanished while it was being sent: nothing more is sent; put it back and run "
                           "the same command again to resume.") from None
    if _identity(now) != _identity(st):
        raise FileChangedLocally()


def _send_parts(device: DeviceClient, relay: RelayClient, store: MailStore, handle, where: Path,  # type: ignore
                st: os.stat_result, record: dict, progress: Progress | None, patience: float) -> None:
    file_id, parts, part_size, size = str(record["id"]), int(record["parts"]), int(record["part_size"]), \
        int(record["size"])
    sent = int(record["sent"])
    fed = int(device.call("file_resume", file=file_id)["next"])
    start = min(fed, sent)
    sealed: queue.Queue = queue.Queue(maxsize=PIPELINE)
    stop = threading.Event()
    fd = handle.fileno()

    def feed() -> None:
        """Read each part and have the device seal it (a worker: the relay takes the previous ones meanwhile)."""
        try:
            for index in range(start, parts):
                if stop.is_set():
                    return
                _check_unchanged(where, st)
                length = part_size if index < parts - 1 else size - part_size * (parts - 1)
                data = os.pread(fd, length, index * part_size)
                if len(data) != length:
                    raise FileChangedLocally()
                answer = device.call("file_part", file=file_id, index=index, data=data, want=index >= sent)
                _check_unchanged(where, st)
                sealed.put((index, answer.get("part")))
        except BaseException as exc:  # noqa: BLE001 - handed to the sending thread, raised there
            sealed.put((-1, exc))

    worker = threading.Thread(target=feed, name="otc-file-feed", daemon=True)
    worker.start()
    try:
        if progress is not None:
            progress(min(sent * part_size, size), size)
        for _ in range(start, parts):
            index, part = sealed.get()
            if index < 0:
                raise part
            if part is None:  # hashed again only: the relay has it
                continue
            # A streamed part goes as raw bytes; an --otp part is a package, sent as every package is (base64).
            contents = part if att.is_stream_part(part) else base64.b64encode(part).decode("ascii")
            relay_send(relay, str(record["mailbox"]), contents, f"file-{file_id}-{index}", patience, stop)
            record["sent"] = index + 1
            # Not synced: a power cut that loses it only has the parts after the last one synced fed again and
            # sent again under the same idempotency keys, which the relay keeps as long as the parts (and the
            # device seals a part again only from the same bytes).
            store.set_setting(OUT + file_id, json.dumps(record), durable=False)
            if progress is not None:
                progress(min((index + 1) * part_size, size), size)
    finally:
        stop.set()
        while worker.is_alive():
            try:
                sealed.get(timeout=0.1)
            except queue.Empty:
                pass
        worker.join()


# -- receiving -------------------------------------------------------------------------------------------------

_UNSAFE = re.compile(r'[<>:"|?*\x00-\x1f\x7f]')
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


NAME_MAX = 255  # bytes in one file name (Linux, macOS; UTF-8)
SAVE_NAME_BYTES = NAME_MAX - len(" (9999)")  # room for unique_path's " (n)"


def _fit(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, never inside a character."""
    return text.encode("utf-8")[:max(limit, 0)].decode("utf-8", "ignore")


def safe_name(name: str) -> str:
    """A received file's name made safe to save anywhere: no separators, control characters, leading dots
    (hidden files, and this client's temporary names) or names a system reserves; at most 200 characters and
    SAVE_NAME_BYTES bytes of UTF-8 (a name the device takes may be 255 bytes, and " (1)" must still fit),
    its extension kept."""
    name = name.replace("/", "_").replace("\\", "_")
    name = _UNSAFE.sub("_", name).strip().lstrip(".").strip()
    if name.split(".")[0].lower() in _RESERVED:
        name = "_" + name
    if len(name) > 200 or len(name.encode("utf-8")) > SAVE_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and len(ext.encode("utf-8")) < 20:
            name = _fit(stem[: 200 - len(ext) - 1], SAVE_NAME_BYTES - len(ext.encode("utf-8")) - 1) + "." + ext
        else:
            name = _fit(name[:200], SAVE_NAME_BYTES)
    return name or "file"


def _taken(path: Path) -> bool:
    """Whether ``path`` names anything (a link too); any error but "no such file" counts as taken."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True


def _size(path: Path) -> int:
    """The size of the regular file at ``path``; -1 if there is none."""
    try:
        st = os.lstat(path)
    except OSError:
        return -1
    return st.st_size if stat.S_ISREG(st.st_mode) else -1


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file (two links to it); False if either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def unique_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name (1)``, ``name (2)``... : the first that does not exist (each at most
    NAME_MAX bytes: the stem is cut to make room)."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    suffix = "." + ext if ext else ""
    for n in range(10_000):
        if n == 0:
            candidate = folder / name
        else:
            mark = f" ({n}){suffix}"
            candidate = folder / (_fit(stem, NAME_MAX - len(mark.encode("utf-8"))) + mark)
        if not _taken(candidate):
            return candidate
    raise FileSaveError(f"Too many files named {name} in {folder}.")


@dataclass
class Received:
    """What a file event did: the file's public header, and where it stands."""

    file_id: str
    name: str
    size: int
    done: int  # bytes saved so far
    contact: str
    saved: str = ""  # the final path, once complete and verified
    sha256: str = ""


class IncomingFiles:
    """The files this laptop is receiving, saved into ``downloads``."""

    def __init__(self, store: MailStore, device: DeviceClient, downloads: Path) -> None:
        self.store = store
        self.device = device
        self.downloads = downloads
        self._hashers: dict[str, tuple[int, hashlib._Hash]] = {}  # parts hashed so far, in memory

    def pending(self) -> list[dict]:
        return [json.loads(v) for v in self.store.settings_with_prefix(IN).values()]

    def _record(self, file_id: str) -> dict | None:
        value = self.store.setting(IN + file_id, "")
        return json.loads(value) if value else None

    def _save(self, record: dict) -> None:
        self.store.set_setting(IN + record["id"], json.dumps(record))

    def _advance(self, record: dict) -> None:
        """Save that the record's parts up to ``next`` are written, never going back: another otc process on this
        home (``otc chat`` while ``otc recv`` runs) may have saved later parts meanwhile (its record stands), or
        ended the file (nothing brings it back, and the part just written, if it made a new temporary file, is
        removed). Read and written in one transaction of the store."""
        gone = False

        def change(stored: str | None) -> str | None:
            nonlocal gone
            gone = stored is None
            if gone or int(json.loads(stored or "{}")["next"]) >= int(record["next"]):
                return None
            return json.dumps(record)

        self.store.update_setting(IN + record["id"], change)
        if gone:
            Path(record["temp"]).unlink(missing_ok=True)

    def expects(self, file_id: str, index: int) -> bool | None:
        """Whether part ``index`` is new to this laptop (None: the laptop knows no such file)."""
        record = self._record(file_id)
        return None if record is None else index >= int(record["next"])

    def header(self, contact: str, info: dict) -> Received:
        """A file's header, opened by the device: the file is expected."""
        record = self._record(str(info["id"]))
        if record is None:
            record = self._new(contact, info, 0)
        return self._received(record, 0)

    def _new(self, contact: str, info: dict, next_part: int) -> dict:
        try:
            self.downloads.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FileSaveError(f"Cannot make the downloads folder {self.downloads}: {exc.strerror}.") from None
        temp = self.downloads / f"{TEMP_PREFIX}{info['id']}{TEMP_SUFFIX}"
        record = {"id": str(info["id"]), "name": str(info["name"]), "size": int(info["size"]),
                  "sha256": str(info["sha256"]), "parts": int(info["parts"]), "part_size": int(info["part_size"]),
                  "contact": contact, "next": next_part, "temp": str(temp)}
        self._save(record)
        return record

    def part(self, contact: str, info: dict, data: bytes) -> Received:
        """A part the device opened (``info`` its place in the file): written and synced, and the file saved
        under its final name once complete and verified. DiskFull (nothing recorded: the part stays on the
        relay) if the disk is full."""
        file_id, index = str(info["id"]), int(info["index"])
        record = self._record(file_id)
        if record is None:  # the header was opened by a run cut before it recorded it: the device knows it
            known = self.device.call("file_info", file=file_id)
            record = self._new(str(known.get("contact", contact)), known, index)
        if record.get("final"):  # a run cut while it named the complete, verified file
            if not Path(record["temp"]).exists() and _size(Path(record["final"])) == int(record["size"]):
                return self._saved(record, Path(record["final"]))  # named; only the record was left
            if int(record["next"]) >= int(record["parts"]):
                return self._finish(record)  # checked again, then named (the link made, if it was, is kept)
        if index < int(record["next"]):
            return self._received(record, int(record["next"]))  # given again after a cut: already saved
        if index != int(record["next"]):
            raise FileSaveError(f"A part of {record['name']} is missing: it cannot be saved.")
        self._write(record, index, data)
        count, hasher = self._hashers.get(file_id, (0, hashlib.sha256()))
        if count == index:
            hasher.update(data)
            self._hashers[file_id] = (index + 1, hasher)
        record["next"] = index + 1
        if index + 1 < int(record["parts"]):
            self._advance(record)
            return self._received(record, index + 1)
        return self._finish(record)

    def _write(self, record: dict, index: int, data: bytes) -> None:
        try:
            fd = os.open(record["temp"], os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                view, at = memoryview(data), index * int(record["part_size"])
                while view:  # a write may stop short of a full disk (or a file size limit): the next one fails
                    written = os.pwrite(fd, view, at)
                    view, at = view[written:], at + written
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise DiskFull(f"No space left in {self.downloads} to save {record['name']}: it waits on the relay; "
                               "free some space and receive again.") from None
            raise FileSaveError(f"Cannot save {record['name']} in {self.downloads}: "
                                f"{exc.strerror or 'write failed'}.") from None

    def _finish(self, record: dict) -> Received:
        file_id, temp = str(record["id"]), Path(record["temp"])
        count, hasher = self._hashers.pop(file_id, (0, None))
        size = int(record["size"])
        try:
            actual = temp.stat().st_size if size else (temp.stat().st_size if temp.exists() else 0)
            if hasher is None or count != int(record["parts"]):  # cut and resumed: read it back
                hasher = hashlib.sha256()
                if size:
                    with open(temp, "rb") as f:
                        hasher = _hash(f)
        except OSError as exc:
            raise FileSaveError(f"Cannot read back {record['name']}: {exc.strerror}.") from None
        if actual != size or hasher.hexdigest() != record["sha256"]:
            temp.unlink(missing_ok=True)
            self._forget(file_id)
            raise FileCorrupt(f"{record['name']} from {record['contact']} does not match its size or SHA-256 "
                              "fingerprint: it was discarded.")
        try:
            if not temp.exists():
                temp.touch(mode=0o600)  # an empty file has no part written
            final = self._link(temp, record)
        except OSError as exc:  # whatever the system says, one line: the part waits on the relay
            if exc.errno in _NO_SPACE:
                raise DiskFull(f"No space left in {self.downloads} to save {record['name']}.") from None
            raise FileSaveError(f"Cannot save {record['name']} in {self.downloads}: "
                                f"{exc.strerror or type(exc).__name__}.") from None
        return self._saved(record, final)

    def _saved(self, record: dict, final: Path) -> Received:
        self._forget(str(record["id"]))
        size = int(record["size"])
        return Received(str(record["id"]), str(record["name"]), size, size, str(record["contact"]), str(final),
                        str(record["sha256"]))

    def _link(self, temp: Path, record: dict) -> Path:
        """Give the verified file its final name: a hard link that fails rather than overwrite, then the
        temporary name goes."""
        done = record.get("final")
        if done and _same_file(temp, Path(done)):  # cut between the link and the unlink: it has its name
            self._unlink_temp(temp)
            return Path(done)
        name = safe_name(str(record["name"]))
        for _ in range(100):
            final = unique_path(self.downloads, name)
            record["final"] = str(final)  # recorded first: a run cut after the link finds the file named
            self._save(record)
            try:
                os.link(temp, final)
            except FileExistsError:
                continue  # taken meanwhile: the next free name
            self._unlink_temp(temp)
            return final
        raise FileSaveError(f"Cannot find a free name for {record['name']} in {self.downloads}.")

    def _unlink_temp(self, temp: Path) -> None:
        temp.unlink()
        dir_fd = os.open(self.downloads, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def fail(self, file_id: str) -> str:
        """Discard a file that can never complete: its temporary file, its record and its key on the device.
        Its name ("" if this laptop knew no such file)."""
        record = self._record(file_id)
        if record is None:
            return ""
        Path(record["temp"]).unlink(missing_ok=True)
        self._hashers.pop(file_id, None)
        self._forget(file_id)
        return f"{record['name']} from {record['contact']}"

    def _forget(self, file_id: str) -> None:
        self.store.delete_setting(IN + file_id)
        try:
            self.device.call("file_end", file=file_id)  # the device forgets the file's key
        except ClientError:
            pass

    def _received(self, record: dict, next_part: int) -> Received:
        done = min(next_part * int(record["part_size"]), int(record["size"]))
        return Received(str(record["id"]), str(record["name"]), int(record["size"]), done, str(record["contact"]))


def default_downloads() -> Path:
    """Where received files go: ``$OTC_DOWNLOADS``, else ``~/Downloads``."""
    given = os.environ.get("OTC_DOWNLOADS")
    return Path(given) if given else Path.home() / "Downloads"
