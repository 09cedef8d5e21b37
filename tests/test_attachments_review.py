"""An outside review's attacks on attachments, kept as regression tests (docs/attachments.md, "Attacks").

The attackers are written here, independent of the code they attack: a hostile laptop that calls its device's
methods in an order or at a moment of its choosing (two RPC calls at once are two threads), a malicious peer
device whose headers are built from the byte layout in docs/attachments.md with pyca primitives, never with
onetimechat/attachment.py.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from device.confirm import FileSummary
from device.engine import Device
from device.errors import PadExhausted
from onetimechat.errors import OTCError
from onetimechat.package import Kind
from tests.chat_fixtures import make_world
from tests.conftest import make_pair, otc
from tests.test_attachments import recv, send, world  # noqa: F401 - the fixture
from tests.test_attachments_device import Owner, devices, file_card  # noqa: F401 - the fixture


def _nearly_empty(tmp_path):
    """Alice's device with 60 bytes of pad left to send to bob (the owner approved a text that took the rest),
    bob's device, the owner, and a grant of 4096 bytes from bob's device that alice's laptop holds."""
    home_a, home_b, pad_id = make_pair(tmp_path, size=1 << 16)
    owner = Owner()
    alice, bob = Device.open(home_a, owner), Device.open(home_b)
    left = alice.store.pads("bob")[0].send_left
    alice.package("bob", b"x" * (left - 16 - 60))
    assert alice.store.pads("bob")[0].send_left < 104 + 5 + 16  # a file header cannot fit
    grant = bytes(bob.grant(pad_id, 4096)[0].package)
    return alice, bob, owner, grant


# -- 1 (HIGH): a file or a text sealed with no confirmation when a grant lands between the check and the seal --

def test_a_grant_landing_during_file_begin_never_seals_an_unconfirmed_header(tmp_path):
    """The laptop hands its device the grant (unpackage) just after begin found no pad with room and before it
    reserves: the header must not go out unless the owner was asked."""
    alice, bob, owner, grant = _nearly_empty(tmp_path)
    try:
        asked = len(owner.asked)
        real = alice.store.save_settings
        fired = {}

        def save_settings(values, event=None, detail=None):
            real(values, event, detail)
            if event == "file-send" and not fired:  # the laptop's concurrent unpackage lands here
                fired["grant"] = alice.unpackage(grant)

        alice.store.save_settings = save_settings
        data = b"exfiltrated"
        sealed = None
        try:
            sealed = alice.files.begin("bob", "x.bin", len(data), hashlib.sha256(data).digest())
        except PadExhausted:
            pass
        assert sealed is None or len(owner.asked) > asked, "a file header was sealed and the owner never asked"
        if sealed is None:
            assert not fired, "refused before anything was recorded"
    finally:
        alice.close()
        bob.close()


def test_a_file_that_cannot_fit_is_refused_before_it_is_recorded_or_asked(tmp_path):
    alice, bob, owner, _ = _nearly_empty(tmp_path)
    try:
        asked = len(owner.asked)
        with pytest.raises(PadExhausted) as info:
            alice.files.begin("bob", "x.bin", 3, hashlib.sha256(b"abc").digest())
        assert "pad bytes and" in str(info.value)
        assert len(owner.asked) == asked
        assert not alice.store.settings_with_prefix("file-out:")
    finally:
        alice.close()
        bob.close()


def _race(tmp_path, trials: int, spin: float, send) -> int:
    """Run ``send(alice)`` on one thread while the laptop applies a grant on another; how many sends were
    sealed with the owner never asked."""
    wins = 0
    for t in range(trials):
        alice, bob, owner, grant = _nearly_empty(tmp_path / str(t))
        try:
            asked = len(owner.asked)
            out: dict = {}

            def run():
                try:
                    out["sealed"] = send(alice)
                except PadExhausted:
                    pass

            th = threading.Thread(target=run)
            t0 = time.perf_counter()
            th.start()
            while time.perf_counter() - t0 < t * spin:  # a different moment each trial
                pass
            alice.unpackage(grant)
            th.join(timeout=60)
            assert not th.is_alive()
            if "sealed" in out and len(owner.asked) == asked:
                wins += 1
        finally:
            alice.close()
            bob.close()
    return wins


def test_the_grant_race_for_a_file_with_real_threads(tmp_path):
    assert _race(tmp_path, 30, 0.00025,
                 lambda alice: alice.files.begin("bob", "x.bin", 3, hashlib.sha256(b"abc").digest())) == 0


def test_the_grant_race_for_a_text_with_real_threads(tmp_path):
    assert _race(tmp_path, 30, 0.0001, lambda alice: alice.package("bob", b"y" * 200)) == 0


# -- 2 (MEDIUM): an --otp part sealed again spent fresh pad without the owner ----------------------------------

MiB = 1 << 20


def send_used(device: Device, contact: str) -> int:
    return sum(p.send_used for p in device.store.pads(contact))


def test_an_otp_part_sealed_again_spends_no_more_pad_and_is_the_same_package(devices):  # noqa: F811
    """A hostile laptop asks for part 0 of an --otp file again and again (an honest resume asks again for the
    parts the relay had not taken): the pad spent stays what the owner confirmed, and every repeat is the very
    package sealed the first time, which the receiver opens once."""
    alice, bob, owner = devices
    data = os.urandom(MiB + 100)  # two parts
    start = send_used(alice, "bob")
    header, packaged = alice.files.begin("bob", "a.bin", len(data), hashlib.sha256(data).digest(), otp=True)
    confirmed = owner.asked[0].consumes  # what the owner was told it costs
    first = bytes(alice.files.seal(header.file_id, 0, data[:MiB])[0])
    for _ in range(5):
        assert bytes(alice.files.seal(header.file_id, 0, data[:MiB])[0]) == first
    last = bytes(alice.files.seal(header.file_id, 1, data[MiB:])[0])
    assert bytes(alice.files.seal(header.file_id, 1, data[MiB:])[0]) == last
    assert send_used(alice, "bob") - start == confirmed
    assert len(owner.asked) == 1
    # The receiver: the header, then part 0 (twice from the relay: the second is the pad's replay), then part 1.
    bob.unpackage(bytes(packaged.package))
    assert bob.unpackage(first).plaintext == data[:MiB]
    with pytest.raises(OTCError):
        bob.unpackage(first)
    assert bob.unpackage(last).plaintext == data[MiB:]
    # Other bytes for a part already sealed are still refused (the send ends).
    with pytest.raises(OTCError):
        alice.files.seal(header.file_id, 0, os.urandom(MiB))


def test_an_otp_part_repeat_survives_a_restart_and_the_kept_packages_go_with_the_file(tmp_path):
    home_a, home_b, _ = make_pair(tmp_path, size=1 << 23)
    owner = Owner()
    data = os.urandom(MiB + 5)
    with Device.open(home_a, owner) as alice:
        header, _ = alice.files.begin("bob", "a.bin", len(data), hashlib.sha256(data).digest(), otp=True)
        first = bytes(alice.files.seal(header.file_id, 0, data[:MiB])[0])
        used = send_used(alice, "bob")
    with Device.open(home_a, owner) as alice:  # the device restarted; the laptop resumes from part 0
        assert bytes(alice.files.seal(header.file_id, 0, data[:MiB])[0]) == first
        assert send_used(alice, "bob") == used
        alice.files.end(header.file_id)
        assert not alice.store.settings_with_prefix("file-otp:")


# -- 3 (MEDIUM): a peer's long multibyte name jammed `otc recv` for every contact -------------------------------

class _Device:
    """The laptop's device, as far as saving a received file goes: it forgets a file when told."""

    def call(self, method, **params):
        assert method == "file_end"
        return {"ended": True}


def _save(files, n: int, name: str, data: bytes) -> str:
    info = {"id": (bytes([n]) * 16).hex(), "name": name, "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "parts": 1, "part_size": MiB}
    files.header("mallory", info)
    return files.part("mallory", {**info, "index": 0, "last": True}, data).saved


@pytest.mark.parametrize("name", ["ж" * 126, "ж" * 127 + "a", "€" * 83 + ".pdf", "a" * 248 + ".tar.gz",
                                  "日本" * 40 + "." + "x" * 14])
def test_a_long_multibyte_name_received_three_times_is_saved_three_times(tmp_path, name):
    """Names up to 255 bytes of UTF-8 (all the device takes): the same one three times gets three files, none
    over NAME_MAX, the extension kept when there is a short one."""
    from client.files import IncomingFiles
    from client.mailstore import MailStore

    assert len(name.encode()) <= 255
    downloads = tmp_path / "dl"
    files = IncomingFiles(MailStore("http://device.invalid:1", home=tmp_path / "client"), _Device(), downloads)
    saved = [_save(files, n, name, b"hello %d" % n) for n in range(3)]
    assert len(set(saved)) == 3
    for n, path in enumerate(saved):
        assert Path(path).read_bytes() == b"hello %d" % n
        assert len(os.path.basename(path).encode()) <= 255
        if name.endswith((".pdf", ".gz")):
            assert path.endswith(name[name.rindex("."):])
    assert sorted(p.name for p in downloads.iterdir()) == sorted(os.path.basename(p) for p in saved)


def test_a_name_that_cannot_be_checked_is_taken_not_a_crash(tmp_path):
    from client.files import unique_path

    long = "x" * 300  # over NAME_MAX: the system answers ENAMETOOLONG, not "no such file"
    assert unique_path(tmp_path, long).name != long


def test_a_long_cyrillic_name_received_twice_is_saved_and_the_text_after_it_shown(world, tmp_path):  # noqa: F811
    """End to end (a real relay, two devices): a 252-byte name whose " (1)" would be 256 bytes, received when a
    file of that name is already there; `otc recv` saves it and shows the text that follows."""
    name = "ж" * 126
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / name).write_text("already here")  # the same file received last week
    original = tmp_path / name
    original.write_text("report")
    assert send(world, original).returncode == 0
    alice = world.people["alice"]
    assert otc("send", "--device", alice.url, "--relay", world.relay_url, "bob", "hello after the file",
               env=alice.env).returncode == 0
    got = recv(world, downloads)
    assert got.returncode == 0, got.stderr
    assert b"hello after the file" in got.stdout
    assert sorted(p.read_text() for p in downloads.iterdir()) == ["already here", "report"]


# -- 4 (LOW-MEDIUM): an ended file's key stayed on the card ------------------------------------------------------

def _traces(key: bytes) -> list[bytes]:
    """Every form a file key could take in the store's bytes: raw, its base64, and the base64 of a record
    holding that base64 (each of the three alignments, trimmed of its edge characters)."""
    b64 = base64.b64encode(key)
    forms = [key, b64]
    for shift in range(3):
        forms.append(base64.b64encode(b"x" * shift + b'"key": "' + b64)[12:-4])
    return forms


def test_an_ended_files_key_is_gone_from_both_cards(tmp_path):
    """An SD-card thief of an unlocked home (no PIN: the store is plaintext SQLite) reads device.db and its WAL
    after a file ended: the key is in neither, on the sending device nor on the receiving one, though the
    sender's record holding it was rewritten at every part."""
    home_a, home_b, _ = make_pair(tmp_path, size=1 << 23)
    drawn = os.urandom(55)  # the file's id, key and nonce prefix, as the device's random source gives them
    data = os.urandom(3 * MiB + 9)
    with Device.open(home_a, Owner()) as alice, Device.open(home_b) as bob:
        alice.random = lambda n: drawn[:n]
        header, packaged = alice.files.begin("bob", "k.bin", len(data), hashlib.sha256(data).digest())
        parts = [bytes(alice.files.seal(header.file_id, i, data[i * MiB:(i + 1) * MiB])[0]) for i in range(4)]
        bob.unpackage(bytes(packaged.package))
        for part in parts:
            bob.files.open_part(part)
        key = drawn[16:48]
        assert any(form in _card(home_a) for form in _traces(key)), "the attacker finds a live key"
        assert alice.files.end(header.file_id) and bob.files.end(header.file_id)
        for home in (home_a, home_b):
            card = _card(home)
            assert not [form for form in _traces(key) if form in card], f"the key is still in {home.name}'s store"


def _card(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in home.rglob("device.db*") if p.is_file())


# -- 5 (LOW): the confirm card hid the end of a long name ----------------------------------------------------------

@pytest.mark.parametrize("name", [
    "Holiday photos from the lake house, summer 2026, selected and edited for the family" + " " * 30 + ".jpg.exe",
    "W" * 200 + ".pdf.scr", "x" * 240 + ".exe"])
def test_the_confirm_card_shows_a_long_names_end(name):
    """A name long enough to be cut (a hostile laptop pads it) must not hide from the owner what opens it."""
    with file_card(FileSummary(name, 3_500_000, "ab" * 32, "stream")) as (_, screen):
        shown = screen.texts("file-name")
        assert len(shown) == 1 and shown[0].endswith(name[-8:]), shown
        assert shown[0].startswith(name[:4]) and "…" in shown[0]


# -- 6 (LOW): a peer header reusing my outgoing file's id let the relay end my send --------------------------------

def _header_plain(file_id: bytes, size: int, sha: bytes, key: bytes, prefix: bytes, name: bytes) -> bytes:
    """A file header's plaintext, from the byte layout in docs/attachments.md (type 1, version 1, streamed)."""
    return (bytes([1, 1, 1]) + file_id + size.to_bytes(8, "big") + MiB.to_bytes(4, "big") + sha + key + prefix
            + len(name).to_bytes(2, "big") + name)


def test_a_peer_header_reusing_a_known_files_id_is_refused_and_my_send_goes_on(devices):  # noqa: F811
    """bob's device (malicious; the relay shows it alice's file ids, in the clear in every part) sends alice a
    header with the id of the file alice is sending to him: refused, nothing recorded under that id, so no part
    or discard of "that incoming file" can end alice's own send."""
    alice, bob, _ = devices
    data = os.urandom(2 * MiB)
    header, _ = alice.files.begin("bob", "mine.bin", len(data), hashlib.sha256(data).digest())
    alice.files.seal(header.file_id, 0, data[:MiB])
    fid = header.file_id
    decoy = bob.seal("alice", Kind.FILE_PART, _header_plain(fid, 10, bytes(32), os.urandom(32), os.urandom(7),
                                                             b"decoy"))
    with pytest.raises(OTCError) as caught:
        alice.unpackage(bytes(decoy.package))
    assert caught.value.code == "file-id"
    with pytest.raises(OTCError) as caught:  # a garbage part under that id: no incoming file of that id
        alice.files.open_part(b"OTCF\x01" + fid + bytes(5) + os.urandom(32))
    assert caught.value.code == "file-unknown"
    assert alice.files.seal(fid, 1, data[MiB:])[0]  # alice's send goes on
    # A second header for a file already being received is refused the same way.
    other = os.urandom(16)
    first = bob.seal("alice", Kind.FILE_PART, _header_plain(other, 3, hashlib.sha256(b"abc").digest(),
                                                             os.urandom(32), os.urandom(7), b"a.txt"))
    again = bob.seal("alice", Kind.FILE_PART, _header_plain(other, 3, hashlib.sha256(b"xyz").digest(),
                                                             os.urandom(32), os.urandom(7), b"b.txt"))
    alice.unpackage(bytes(first.package))
    with pytest.raises(OTCError) as caught:
        alice.unpackage(bytes(again.package))
    assert caught.value.code == "file-id"
    assert alice.files.info(other)["name"] == "a.txt"


# -- 7 (LOW): `otc send --file` on a FIFO hung -----------------------------------------------------------------

def test_send_file_on_a_fifo_is_one_line_not_a_hang(world, tmp_path):  # noqa: F811
    """A FIFO (or any path that is not a regular file, opened for reading with no writer) is refused in one
    line, at once, and nothing is asked of the device."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    try:
        got = send(world, fifo, timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError("otc send --file FIFO hangs") from None
    err = got.stderr.decode().strip().splitlines()
    assert got.returncode != 0 and len(err) == 1 and "not a regular file" in err[0], err


# -- 8 (LOW): a receiver cut between os.link and the temporary name's unlink saved the file twice ------------------

@pytest.mark.parametrize("where", ["between link and unlink", "after unlink, before the record goes"])
def test_a_receiver_cut_while_it_names_the_file_saves_it_once(tmp_path, monkeypatch, where):
    """The laptop is killed while it gives a verified file its final name; the next run gets the last part
    again (the device gives the part just opened once more): one file, under its name, no temporary left."""
    from client.files import IncomingFiles
    from client.mailstore import MailStore

    downloads = tmp_path / "dl"
    store = MailStore("http://device.invalid:1", home=tmp_path / "client")
    data = b"payload"
    info = {"id": "ab" * 16, "name": "doc.txt", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "parts": 1, "part_size": MiB}
    files = IncomingFiles(store, _Device(), downloads)
    files.header("mallory", info)
    cut = {"armed": True}
    if where == "between link and unlink":
        real_unlink = Path.unlink

        def unlink(self, *a, **k):
            if cut["armed"] and self.name.startswith(".otc-"):
                cut["armed"] = False
                raise KeyboardInterrupt  # the laptop is killed here
            return real_unlink(self, *a, **k)

        monkeypatch.setattr(Path, "unlink", unlink)
    else:
        real_delete = store.delete_setting

        def delete_setting(name):
            if cut["armed"]:
                cut["armed"] = False
                raise KeyboardInterrupt
            return real_delete(name)

        monkeypatch.setattr(store, "delete_setting", delete_setting)
    with pytest.raises(KeyboardInterrupt):
        files.part("mallory", {**info, "index": 0, "last": True}, data)
    assert not cut["armed"]
    files = IncomingFiles(store, _Device(), downloads)  # the next run
    saved = files.part("mallory", {**info, "index": 0, "last": True}, data)
    assert saved.saved == str(downloads / "doc.txt")
    assert [p.name for p in downloads.iterdir()] == ["doc.txt"]
    assert (downloads / "doc.txt").read_bytes() == data
    assert not files.pending()


def test_a_file_that_cannot_be_saved_holds_back_only_its_own_contacts_messages(tmp_path):
    """End to end: bob's downloads folder cannot be made (a file is in its way); alice's file waits on the relay
    with a one-line refusal, and carol's text is shown all the same; once the way is clear the file arrives.
    (Before the fix it failed whenever alice's mailbox came first in the batch: its mailbox ids are random.)"""
    w = make_world(tmp_path, names=("bob", "alice", "carol"), size=1 << 20)
    try:
        original = tmp_path / "notes.txt"
        original.write_text("the notes")
        assert send(w, original).returncode == 0  # alice to bob
        carol = w.people["carol"]
        assert otc("send", "--device", carol.url, "--relay", w.relay_url, "bob", "hello from carol",
                   env=carol.env).returncode == 0
        blocked = tmp_path / "downloads"
        blocked.write_text("not a folder")
        got = recv(w, blocked)
        err = got.stderr.decode().strip().splitlines()
        assert got.returncode != 0 and len(err) == 1 and "downloads" in err[0], err
        assert b"hello from carol" in got.stdout
        blocked.unlink()
        again = recv(w, blocked)
        assert again.returncode == 0, again.stderr
        assert (blocked / "notes.txt").read_text() == "the notes"
    finally:
        w.close()
