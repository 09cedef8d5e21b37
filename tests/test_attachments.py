"""Files end to end: `otc send --file` and `otc recv` through a real relay and two real devices.

The relay and the devices are the production servers on 127.0.0.1 (tests/chat_fixtures.py); the laptops are
real `otc` processes. The hostile relay is this test editing the relay's own store (SQLite) between the
sender and the receiver: it alters, drops, repeats and swaps parts.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.files import FileChangedLocally, FileVanished, sha256_file
from client.mailstore import MailStore
from client.messenger import Messenger
from client.relay import RelayClient
from client.rpc import DeviceClient
from client.state import ClientState
from onetimechat import package as fmt
from tests.chat_fixtures import make_world
from tests.conftest import ROOT, otc

MiB = 1 << 20


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path, names=("alice", "bob"), size=8 * MiB)
    yield w
    w.close()


sha = sha256_file


def make_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(os.urandom(n))
            left -= n
    return path


def send(world, path: Path, *extra: str, timeout: float = 120):
    alice = world.people["alice"]
    return otc("send", "--device", alice.url, "--relay", world.relay_url, "--file", str(path), *extra, "bob",
               env=alice.env, timeout=timeout)


def recv(world, downloads: Path, *extra: str, timeout: float = 120):
    bob = world.people["bob"]
    return otc("recv", "--device", bob.url, "--relay", world.relay_url, "--downloads", str(downloads), "--json",
               *extra, env=bob.env, timeout=timeout)


def saved(downloads: Path) -> list[Path]:
    return sorted(p for p in downloads.iterdir() if not p.name.startswith(".")) if downloads.exists() else []


def partials(downloads: Path) -> list[Path]:
    return sorted(p for p in downloads.iterdir() if p.name.startswith(".otc-")) if downloads.exists() else []


def relay_rows(world) -> list[tuple[int, str, bytes]]:
    with sqlite3.connect(world.relay_db) as db:
        return [(int(i), str(mailbox), bytes(contents)) for i, mailbox, contents in
                db.execute("SELECT id, mailbox, contents FROM messages ORDER BY mailbox, ref")]


def messenger(world, who: str, downloads: Path | None = None) -> Messenger:
    person = world.people[who]
    device = DeviceClient(person.url, state=ClientState(person.laptop), timeout=30)
    return Messenger(device, RelayClient(world.relay_url), MailStore(device.url, home=person.laptop),
                     downloads=downloads)


@pytest.mark.parametrize("size", [0, 1, 2 * MiB + 1])
def test_a_file_arrives_identical(world, tmp_path, size):
    original = make_file(tmp_path / "holiday photo.jpg", size)
    sent = send(world, original)
    assert sent.returncode == 0, sent.stderr
    parts = max(1, -(-size // MiB))
    assert f"sent holiday photo.jpg to bob: {size:,} bytes in {parts} part(s)" in sent.stdout.decode()
    assert b"sending holiday photo.jpg [" in sent.stderr and b"/s, " in sent.stderr  # the bar: rate, time left
    downloads = tmp_path / "downloads"
    got = recv(world, downloads)
    assert got.returncode == 0, got.stderr
    lines = [json.loads(line) for line in got.stdout.decode().splitlines()]
    done = [line for line in lines if line["kind"] == "file" and line["file"]["saved"]]
    assert len(done) == 1 and done[0]["contact"] == "alice"
    (path,) = saved(downloads)
    assert path.name == "holiday photo.jpg" and done[0]["file"]["saved"] == str(path)
    assert sha(path) == sha(original) == done[0]["file"]["sha256"]
    assert partials(downloads) == []
    if size:
        assert b"receiving holiday photo.jpg [" in got.stderr
    # The relay kept nothing but ciphertext, and the receiver's acknowledgement emptied it.
    assert relay_rows(world) == []


def test_a_second_file_of_the_same_name_never_overwrites(world, tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "notes.txt").write_text("mine, already here")
    for text in ("first", "second"):
        original = tmp_path / "notes.txt"
        original.write_text(text)
        assert send(world, original).returncode == 0
    assert recv(world, downloads).returncode == 0
    assert (downloads / "notes.txt").read_text() == "mine, already here"
    assert (downloads / "notes (1).txt").read_text() == "first"
    assert (downloads / "notes (2).txt").read_text() == "second"


def test_otp_spends_exactly_the_parts_lengths_plus_16_each(world, tmp_path):
    alice = world.people["alice"]
    device = DeviceClient(alice.url, state=ClientState(alice.laptop), timeout=30)
    before = device.status()["contacts"][0]["send"]["used"]
    original = make_file(tmp_path / "secret.pdf", MiB + 4321)
    sent = send(world, original, "--otp")
    assert sent.returncode == 0, sent.stderr
    packages = [fmt.parse(fmt.decode(contents.decode())) for _, _, contents in relay_rows(world)]
    assert [p.kind for p in packages] == [fmt.Kind.FILE_PART] * 3  # the header and two parts, all under the pad
    spent = device.status()["contacts"][0]["send"]["used"] - before
    assert spent == sum(p.length + 16 for p in packages)
    downloads = tmp_path / "downloads"
    assert recv(world, downloads).returncode == 0
    (path,) = saved(downloads)
    assert sha(path) == sha(original)


def test_otp_larger_than_the_pad_is_refused_before_anything_is_spent(world, tmp_path):
    original = make_file(tmp_path / "big.bin", 5 * MiB)
    sent = send(world, original, "--otp")
    assert sent.returncode == 1
    assert sent.stderr.decode().strip().splitlines()[-1].startswith("ERROR: The file does not fit in the pad left")
    assert relay_rows(world) == []


def wait_until(check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError("never happened")


def test_a_send_cut_at_a_random_moment_resumes_and_arrives_identical(world, tmp_path):
    original = make_file(tmp_path / "video.mp4", 12 * MiB + 7)
    alice = world.people["alice"]
    cuts = 0
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "onetimechat.cli", "send", "--device", alice.url, "--relay",
                                 world.relay_url, "--file", str(original), "bob"], env={**os.environ, **alice.env},
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # A cut at a random moment: once the relay holds a random number more of its parts, or a little after.
        target = len(relay_rows(world)) + 1 + os.urandom(1)[0] % 4
        wait_until(lambda: len(relay_rows(world)) >= target or proc.poll() is not None)
        time.sleep(os.urandom(1)[0] / 5000)
        proc.kill()
        proc.communicate()
        if proc.returncode == 0:
            break  # it finished before the cut
        cuts += 1
        if len(relay_rows(world)) >= 14:
            break  # cut after its last part reached the relay: running it again would send the file anew
    assert cuts >= 1
    # A cut after the last part reached the relay (the send done, the process not yet gone) leaves nothing to
    # resume: the same command would send the file again, as a new one.
    resume_and_receive(world, tmp_path, original, 14, resume=proc.returncode != 0 and len(relay_rows(world)) < 14)


def resume_and_receive(world, tmp_path: Path, original: Path, messages: int, resume: bool = True) -> None:
    """Run the cut send again (it says it resumed); the relay holds the header and each part once; the file
    arrives identical."""
    if resume:
        again = send(world, original)
        assert again.returncode == 0, again.stderr
        assert f"resumed and sent {original.name} to bob" in again.stdout.decode()
    assert len(relay_rows(world)) == messages  # the relay kept no duplicate
    downloads = tmp_path / "downloads"
    assert recv(world, downloads).returncode == 0
    (path,) = saved(downloads)
    assert sha(path) == sha(original)
    assert relay_rows(world) == []  # every part acknowledged, those fetched ahead too


def test_a_receive_cut_at_a_random_moment_resumes_and_arrives_identical(world, tmp_path):
    original = make_file(tmp_path / "video.mp4", 12 * MiB + 7)
    assert send(world, original).returncode == 0
    downloads = tmp_path / "downloads"
    bob = world.people["bob"]
    proc = subprocess.Popen([sys.executable, "-m", "onetimechat.cli", "recv", "--device", bob.url, "--relay",
                             world.relay_url, "--downloads", str(downloads)], env={**os.environ, **bob.env},
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: any(p.stat().st_size > 0 for p in partials(downloads)) or proc.poll() is not None)
    time.sleep(int.from_bytes(os.urandom(1), "big") / 12750)  # at most 20 ms: the receive takes about 0.3 s
    proc.kill()
    proc.communicate()
    if proc.returncode != 0:  # cut (a receive that finished before the kill has saved the whole file)
        assert saved(downloads) == []  # nothing under its final name while incomplete
    got = recv(world, downloads)
    assert got.returncode == 0, got.stderr
    (path,) = saved(downloads)
    assert sha(path) == sha(original) and partials(downloads) == []


# -- bad input, each refused with its own one-line error, losing nothing --------------------------------------


def test_a_file_that_vanishes_mid_send_is_refused(world, tmp_path):
    original = make_file(tmp_path / "gone.bin", 3 * MiB)

    def vanish(done: int, total: int) -> None:
        if done:
            original.unlink(missing_ok=True)

    with pytest.raises(FileVanished) as caught:
        messenger(world, "alice").send_file("bob", original, progress=vanish)
    assert str(caught.value).startswith(f"{original} vanished while it was being sent")
    downloads = tmp_path / "downloads"
    got = recv(world, downloads, "--part-wait", "2")
    assert got.returncode == 1
    assert got.stderr.decode().strip().splitlines()[-1] == (
        "ERROR: Incomplete: gone.bin; the rest has not reached the relay yet (run otc recv again to go on).")
    assert saved(downloads) == []


def test_a_file_that_changes_mid_send_is_refused_and_never_completes(world, tmp_path):
    original = make_file(tmp_path / "growing.log", 3 * MiB)

    def grow(done: int, total: int) -> None:
        if done:
            with open(original, "ab") as f:
                f.write(b"more")

    with pytest.raises(FileChangedLocally) as caught:
        messenger(world, "alice").send_file("bob", original, progress=grow)
    assert "changed while it was being sent" in str(caught.value)
    assert "Send it again" in str(caught.value)
    # Its key is gone from the sending device: nothing more of this file can be sealed.
    alice = world.people["alice"]
    events = DeviceClient(alice.url, state=ClientState(alice.laptop)).status(events=50)["events"]
    assert "file-end" in [e["event"] for e in events]


def test_a_name_with_a_control_character_is_refused(world, tmp_path):
    for name in ("bell\x07.txt", "back\\slash.txt"):
        original = tmp_path / name
        original.write_bytes(b"x")
        sent = send(world, original)
        assert sent.returncode == 1
        assert sent.stderr.decode().strip().splitlines() == [
            "ERROR: File refused: its name is empty, too long, or holds a path separator or a control character. "
            "Rename the file and send it again."]
    assert relay_rows(world) == []


def test_a_full_disk_on_the_receiver_loses_nothing(world, tmp_path):
    original = make_file(tmp_path / "big.iso", 3 * MiB + 5)
    assert send(world, original).returncode == 0
    downloads = tmp_path / "downloads"

    def small_disk() -> None:  # the receiver's disk fills after 1 MiB (writes past it fail as on a full disk)
        resource.setrlimit(resource.RLIMIT_FSIZE, (MiB + 10, MiB + 10))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    bob = world.people["bob"]
    full = subprocess.run([sys.executable, "-m", "onetimechat.cli", "recv", "--device", bob.url, "--relay",
                           world.relay_url, "--downloads", str(downloads)], env={**os.environ, **bob.env}, cwd=ROOT,
                          capture_output=True, timeout=120, preexec_fn=small_disk)
    assert full.returncode == 1
    assert full.stderr.decode().strip().splitlines()[-1] == (
        f"ERROR: No space left in {downloads} to save big.iso: it waits on the relay; free some space and "
        "receive again.")
    assert saved(downloads) == []
    got = recv(world, downloads)  # space again: the part that did not fit was still on the relay
    assert got.returncode == 0, got.stderr
    (path,) = saved(downloads)
    assert sha(path) == sha(original)


def served(world, contents: bytes) -> bytes:
    """What the relay serves for a message's stored contents: the bytes of its content file (0xFE and the file's
    name: a part sent raw, relay/parts.py), the raw bytes after 0xFF (a part sent raw, in the row), else the
    contents (text: a package or a part in base64)."""
    if contents[:1] == b"\xfe":
        return (Path(f"{world.relay_db}-parts") / contents[1:].decode("ascii")).read_bytes()
    return contents[1:] if contents[:1] == b"\xff" else contents


def serve(world, row: tuple[int, str, bytes], data: bytes) -> None:
    """The hostile relay serves ``data`` for this message from now on (in its content file, if it has one)."""
    row_id, _, contents = row
    if contents[:1] == b"\xfe":
        (Path(f"{world.relay_db}-parts") / contents[1:].decode("ascii")).write_bytes(data)
    else:
        edit_relay(world, "UPDATE messages SET contents = ? WHERE id = ?", data, row_id)


def parts_on_relay(world) -> list[tuple[int, str, bytes]]:
    rows = relay_rows(world)
    # "OTCF", raw or in base64: the streamed parts.
    return [row for row in rows if served(world, row[2])[:4] == b"OTCF" or row[2].startswith(b"T1RDRg")]


def edit_relay(world, sql: str, *args) -> None:
    with sqlite3.connect(world.relay_db, timeout=30) as db:
        db.execute(sql, args)


def flip_one_byte(contents: bytes) -> bytes:
    import base64

    raw = bytearray(contents if contents[:4] == b"OTCF" else base64.b64decode(contents))
    raw[200] ^= 1
    return bytes(raw) if contents[:4] == b"OTCF" else base64.b64encode(bytes(raw))


@pytest.mark.parametrize("attack,warning", [
    ("tamper", "tamper: a part of a file failed its authentication check"),
    ("drop", "tamper: a part of a file came out of order"),
    ("duplicate", "replay: a part of a file that was already received came again"),
    ("reorder", "tamper: a part of a file came out of order"),
])
def test_a_hostile_relay_cannot_slip_a_bad_part_into_a_file(world, tmp_path, attack, warning):
    original = make_file(tmp_path / "contract.pdf", 3 * MiB + 1)
    assert send(world, original).returncode == 0
    parts = parts_on_relay(world)
    assert len(parts) == 4
    first, second = served(world, parts[0][2]), served(world, parts[1][2])
    if attack == "tamper":
        serve(world, parts[1], flip_one_byte(second))
    elif attack == "drop":
        edit_relay(world, "DELETE FROM messages WHERE id = ?", parts[1][0])
    elif attack == "duplicate":
        serve(world, parts[1], first)
    else:
        serve(world, parts[0], second)
        serve(world, parts[1], first)
    downloads = tmp_path / "downloads"
    got = recv(world, downloads)
    lines = [json.loads(line) for line in got.stdout.decode().splitlines()]
    refused = [w for line in lines for w in line["warnings"] if line["kind"] is None]
    assert any(w.startswith(warning) for w in refused), lines
    # The file can never complete: it is discarded (nothing under its final name, no temporary file left).
    assert any(w.endswith("the file contract.pdf from alice cannot be completed and was discarded")
               for w in refused), refused
    assert got.returncode == 0, got.stderr
    assert saved(downloads) == [] and partials(downloads) == []


def test_a_file_in_the_chat(world, tmp_path):
    """`/file` in `otc chat` on both sides (real chats in pseudo-terminals, read as a person sees them)."""
    original = make_file(tmp_path / "plan.pdf", 2 * MiB + 1)
    downloads = tmp_path / "bob-downloads"
    alice = world.chat("alice", "--downloads", str(tmp_path / "alice-downloads"))
    bob = world.chat("bob", "--downloads", str(downloads))
    alice.wait_for("contacts: bob")
    bob.wait_for("contacts: alice")
    alice.type(f"/file bob {original}")
    bob.wait_for("alice is sending you plan.pdf (2.0 MiB)")
    bob.wait_for(f"alice: 📎 plan.pdf (2.0 MiB) saved as {downloads / 'plan.pdf'}")
    alice.wait_for("me → bob: 📎 plan.pdf (2.0 MiB)  ✓")
    assert sha(downloads / "plan.pdf") == sha(original)
    # The owner was asked about the file, as a file (its name, size and fingerprint).
    asked = world.people["alice"].source.asked[-1]
    assert asked.startswith("File: plan.pdf\nSize: 2,097,153 bytes\nSHA-256: " + sha(original)[:4])
    # `/file PATH` goes to the contact of the last message.
    bob.type("alice: thanks, here is mine")
    alice.wait_for("bob: thanks, here is mine")
    reply = make_file(tmp_path / "notes.txt", 10)
    bob.type(f"/file {reply}")
    alice.wait_for("bob is sending you notes.txt")
    bob.wait_for("me → alice: 📎 notes.txt (10 B)  ✓")
    alice.wait_for(f"bob: 📎 notes.txt (10 B) saved as {tmp_path / 'alice-downloads' / 'notes.txt'}")


def test_a_send_resumes_after_the_sending_device_restarts(world, tmp_path):
    """The device's running hash is lost with its process: the laptop feeds it the parts the relay has again
    (hashed only, not sealed or sent twice), then the rest."""
    original = make_file(tmp_path / "archive.tar", 6 * MiB + 3)
    alice = world.people["alice"]
    proc = subprocess.Popen([sys.executable, "-m", "onetimechat.cli", "send", "--device", alice.url, "--relay",
                             world.relay_url, "--file", str(original), "bob"], env={**os.environ, **alice.env},
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: len(relay_rows(world)) >= 3 or proc.poll() is not None)
    proc.kill()
    proc.communicate()
    assert proc.returncode != 0, "the send finished before the cut"
    alice.stop()
    alice.start()  # the same home and port: a device unplugged and plugged in again
    resume_and_receive(world, tmp_path, original, 8)


def test_a_receive_resumes_after_the_receiving_device_restarts(world, tmp_path):
    """The receiving device keeps each file's place durably: restarted mid-file, it opens the next part."""
    original = make_file(tmp_path / "archive.tar", 3 * MiB + 3)
    assert send(world, original).returncode == 0
    bob = world.people["bob"]
    downloads = tmp_path / "downloads"
    m = messenger(world, "bob", downloads)
    seen = []

    def stop_after_two(event) -> None:
        seen.append(event)
        if len(seen) == 3:  # the header and two parts
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        m.poll(stop_after_two)
    bob.stop()
    bob.start()
    got = recv(world, downloads)
    assert got.returncode == 0, got.stderr
    (path,) = saved(downloads)
    assert sha(path) == sha(original)


@pytest.mark.parametrize("args,line", [
    (["--otp", "bob", "hello"], "ERROR: --otp is for files: otc send --file PATH --otp CONTACT (a message always "
                                "goes under the pad)."),
    (["--file", "x.pdf", "bob", "hello"], "ERROR: Give either a MESSAGE or --file PATH, not both."),
])
def test_send_usage_errors_are_one_line(tmp_path, args, line):
    result = otc("send", "--device", "http://127.0.0.1:9", *args, env={"OTC_CLIENT_HOME": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines() == [line]


def test_a_receive_cut_just_after_the_file_is_saved_shows_no_false_alarm(world, tmp_path):
    """Cut after the file took its name but before the relay cursor moved past its last part: the part comes
    again, the laptop knows it as its own, and nothing is refused or saved twice."""
    original = make_file(tmp_path / "memo.txt", 5000)
    assert send(world, original).returncode == 0
    downloads = tmp_path / "downloads"
    m = messenger(world, "bob", downloads)

    def cut_when_saved(event) -> None:
        if event.file is not None and event.file.saved:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        m.poll(cut_when_saved)
    got = recv(world, downloads)
    assert got.returncode == 0, got.stderr
    assert got.stdout == b""  # nothing refused, nothing new
    (path,) = saved(downloads)
    assert sha(path) == sha(original)


def test_a_receive_cut_while_two_parts_are_in_flight_resumes_identical(world, tmp_path):
    """The laptop saves part 1 while the device opens part 2 (client/messenger.py): cut there, the device has
    opened two parts this laptop never saved. The next run gets both again (the device gives its last two parts
    again) and the file arrives identical, with nothing refused."""
    original = make_file(tmp_path / "film.mkv", 4 * MiB + 3)
    assert send(world, original).returncode == 0
    downloads = tmp_path / "downloads"
    m = messenger(world, "bob", downloads)
    write = m.files._write
    file_ids = []

    def write_then_cut(record: dict, index: int, data: bytes) -> None:
        if index == 1:
            assert m._opening is not None, "part 2 is not being opened while part 1 is saved"
            m._opening[1].join()  # the device has opened part 2
            file_ids.append(record["id"])
            raise KeyboardInterrupt  # the laptop is killed before part 1 is written
        write(record, index, data)

    m.files._write = write_then_cut  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        m.poll(lambda event: None)
    assert m.device.call("file_info", file=file_ids[0])["next"] == 3  # parts 1 and 2 opened, neither saved
    got = recv(world, downloads)
    assert got.returncode == 0, got.stderr
    lines = [json.loads(line) for line in got.stdout.decode().splitlines()]
    assert not [line for line in lines if line.get("error")], lines
    (path,) = saved(downloads)
    assert sha(path) == sha(original)
    assert partials(downloads) == [] and relay_rows(world) == []
