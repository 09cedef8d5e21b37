"""The PIN lock: pads and keys encrypted at rest, wrong PINs, the wipe, and the locked server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests

from client.errors import RemoteError
from device.engine import Device
from device.gpio import ARM_S, CONFIRM_PIN, DECLINE_PIN, LED_PIN, FakePins, GpioPanel
from device.home import WrongPin, open_home
from device.localpair import pair_local
from device.server import Server, ServerConfig
from device.storage.lock import DeviceLocked, DeviceWiped, StoreLock
from device.storage.padstore import PadStore
from device.touchscreen.testing import Screen, open_app
from device.ui import Console, LockState, PanelSource
from tests.conftest import Counter, det_bytes, otc

PIN = "482916"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def pinned_pair(tmp_path: Path, pin_a: str | None = PIN, pin_b: str | None = PIN, size: int = 1 << 16):
    a = PadStore.init(tmp_path / "alice", "alice", pin=pin_a)
    b = PadStore.init(tmp_path / "bob", "bob", pin=pin_b)
    pad_id = pair_local(a, b, size, random_bytes=Counter("pin-lock"))
    a.close()
    b.close()
    # The pad's bytes, regenerated from the same pinned source (ids come first).
    source = Counter("pin-lock")
    for _ in range(3):
        source(16)
    pad = b"".join(source(min(1 << 20, size - i)) for i in range(0, size, 1 << 20))
    return tmp_path / "alice", tmp_path / "bob", pad_id, pad


def home_contains(home: Path, secret: bytes, window: int = 16) -> bool:
    """Whether any ``window``-byte run of ``secret`` appears anywhere in the home's files."""
    runs = {secret[i : i + window] for i in range(len(secret) - window + 1)}
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            # Any copy of 31+ bytes of the secret holds an aligned window of the file.
            if any(data[i : i + window] in runs for i in range(0, len(data) - window + 1, window)):
                return True
    return False


def write_pin(tmp_path: Path, pin: str, name: str = "pin") -> Path:
    path = tmp_path / name
    path.write_text(pin + "\n")
    return path


def test_a_locked_home_holds_no_pad_byte_and_no_key(tmp_path):
    home_a, home_b, pad_id, pad = pinned_pair(tmp_path / "locked")
    plain_a, plain_b, _, plain_pad = pinned_pair(tmp_path / "plain", pin_a=None, pin_b=None)
    assert home_contains(plain_a, plain_pad)  # the scan does find a pad in the clear
    lock = StoreLock(home_a)
    assert lock.unlock(PIN).ok
    with PadStore(home_a, storage_key=lock.key) as store:
        from device.clients import ClientRegistry

        key = det_bytes("a pairing key", 32)
        ClientRegistry(store).add("laptop", key)
        assert ClientRegistry(store).list()[0].keys.request  # it opens with the storage key
        with Device(store) as device:
            device.package("bob", b"one message")
    for home in (home_a, home_b):
        assert not home_contains(home, pad)
    assert not home_contains(home_a, key)
    assert not home_contains(home_a, lock.key)  # the storage key is only ever stored wrapped


def test_encrypted_homes_exchange_messages_like_plain_ones(tmp_path):
    home_a, home_b, pad_id, pad = pinned_pair(tmp_path, pin_b=None)
    with Device(open_home(home_a, write_pin(tmp_path, PIN))) as a, Device(open_home(home_b)) as b:
        sent = a.package("bob", b"sealed at rest, plain on the wire")
        assert b.unpackage(sent.package).plaintext == b"sealed at rest, plain on the wire"
        reply = b.package("alice", b"and back")
        assert a.unpackage(reply.package).plaintext == b"and back"
    # The package is exactly what the unencrypted engine makes from the same pad.
    from onetimechat import package as fmt

    text = b"sealed at rest, plain on the wire"
    assert bytes(sent.package) == bytes(fmt.seal(1, pad_id, 16, pad[16 : 16 + 16 + len(text)], text, pad[:16]))


def test_locked_home_refuses_without_its_pin(tmp_path):
    home_a, home_b, pad_id, pad = pinned_pair(tmp_path)
    with pytest.raises(DeviceLocked):
        PadStore(home_a)
    with pytest.raises(DeviceLocked):
        open_home(home_a)
    result = otc("device", "status", "--home", str(home_a))
    assert result.returncode != 0 and "PIN-locked" in result.stderr.decode()
    good = otc("device", "status", "--home", str(home_a), "--pin-file", str(write_pin(tmp_path, PIN)), check=True)
    assert "PIN-locked" in good.stdout.decode() and "bob" in good.stdout.decode()
    bad = otc("device", "status", "--home", str(home_a), "--pin-file", str(write_pin(tmp_path, "000000", "bad")))
    assert bad.returncode != 0 and bad.stderr.decode().startswith("ERROR: Wrong PIN.")


def test_wrong_pins_double_the_wait_warn_from_the_seventh_and_wipe_at_the_tenth(tmp_path):
    home_a, home_b, pad_id, pad = pinned_pair(tmp_path)
    clock = Clock()
    lock = StoreLock(home_a, clock=clock)
    waits = []
    for attempt in range(1, 10):
        result = lock.unlock("111111")
        assert not result.ok
        wait = result.status.retry_at - clock.now
        waits.append(wait)
        assert result.status.failures == attempt
        assert result.status.warning == (attempt >= 7)
        if attempt >= 7:
            assert f"{10 - attempt} more wrong PIN(s) erase this device" in result.message
        # Too early: refused without counting, and the right PIN does not help either.
        early = lock.unlock(PIN)
        assert not early.ok and early.status.failures == attempt and "Wait" in early.message
        clock.now += wait
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    # A restart does not reset the count.
    assert StoreLock(home_a, clock=clock).status().failures == 9
    result = lock.unlock("111111")
    assert not result.ok and result.status.state == LockState.WIPED
    assert not list((home_a / "pads").glob("*.pad")) and not (home_a / "lock.json").exists()
    assert lock.unlock(PIN).status.state == LockState.WIPED
    with pytest.raises(DeviceWiped):
        PadStore(home_a, storage_key=b"\0" * 32)
    assert not home_contains(home_a, pad)
    result = otc("device", "status", "--home", str(home_a), "--pin-file", str(write_pin(tmp_path, PIN)))
    assert result.returncode != 0 and "erased" in result.stderr.decode()


def test_the_right_pin_resets_the_count(tmp_path):
    home_a, *_ = pinned_pair(tmp_path)
    clock = Clock()
    lock = StoreLock(home_a, clock=clock)
    for _ in range(3):
        assert not lock.unlock("111111").ok
        clock.now += 1000
    assert lock.unlock(PIN).ok and lock.status().failures == 0


def test_pin_change(tmp_path):
    home_a, *_ = pinned_pair(tmp_path)
    old, new = write_pin(tmp_path, PIN, "old"), write_pin(tmp_path, "731052", "new")
    changed = otc("device", "pin", "--home", str(home_a), "--pin-file", str(old), "--new-pin-file", str(new))
    assert changed.returncode == 0
    with pytest.raises(WrongPin):
        open_home(home_a, old)
    assert StoreLock(home_a).status().failures == 1
    later = StoreLock(home_a, clock=lambda: 10**12)  # past the wait the wrong PIN earned
    assert later.unlock("731052").ok
    with PadStore(home_a, storage_key=later.key) as store:
        assert store.contacts() == ["bob"]


def test_bad_pins_are_refused_before_use(tmp_path):
    for n, pin in enumerate(("123", "1234", "12345", "1" * 65, "12a4", "", "１２３４", "short p", "tab\there!")):
        result = otc("device", "init", "--home", str(tmp_path / f"h{n}"), "--name", "x",
                     "--pin-file", str(write_pin(tmp_path, pin, f"p{n}")))
        err = result.stderr.decode().strip()
        assert result.returncode != 0 and len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert "6 to 64 digits" in err and "passphrase is 8 to 256 characters" in err
        assert not (tmp_path / f"h{n}" / "device.db").exists()


def test_a_locked_server_answers_only_health_until_unlocked_on_its_screen(tmp_path):
    home_a, home_b, pad_id, pad = pinned_pair(tmp_path)
    console = Console("alice", "gpio")
    server = Server(ServerConfig(home=home_a, source=PanelSource(console, name="gpio"), console=console),
                    "127.0.0.1", 0).start()
    service = server.app.extensions["otc"]
    console.attach(service.lock, service.panel_status)
    try:
        assert requests.get(server.url + "/v1/health", timeout=10).status_code == 200
        for path in ("/v1/pair/begin", "/v1/call"):
            response = requests.post(server.url + path, json={"name": "x"}, timeout=10)
            assert response.status_code == 423 and response.json()["error"] == "locked"
        assert console.snapshot().lock.state == LockState.LOCKED
        assert not console.unlock("999999").ok
        assert requests.post(server.url + "/v1/pair/begin", json={"name": "x"}, timeout=10).status_code == 423
        service.lock.clock = lambda: 10**12  # skip the wait the wrong PIN earned
        assert console.unlock(PIN).ok
        snapshot = console.snapshot()
        assert snapshot.lock.state == LockState.UNLOCKED
        assert [c.name for c in snapshot.contacts] == ["bob"]
        assert requests.post(server.url + "/v1/pair/begin", json={"name": "x"}, timeout=10).status_code == 200
    finally:
        server.close()


def test_gpio_buttons_confirm_and_decline_through_the_rpc(tmp_path):
    from tests.rpc_fixtures import RpcDevice

    home_a, home_b, pad_id, pad = pinned_pair(tmp_path, pin_a=None, pin_b=None)
    console = Console("alice", "gpio")
    source = PanelSource(console, name="gpio")
    server = Server(ServerConfig(home=home_a, source=source, console=console, confirm_timeout=20),
                    "127.0.0.1", 0).start()
    service = server.app.extensions["otc"]
    console.attach(service.lock, service.panel_status)
    pins = FakePins()
    panel = GpioPanel(console, pins).start()
    app = open_app(console)
    screen = Screen(app)
    try:
        codes: list[str] = []
        source.show_code = codes.append  # type: ignore[method-assign]  # read the code off the "screen"
        device = RpcDevice(home_a, home_b, pad_id, source, server, tmp_path)  # type: ignore[arg-type]
        device.source.codes = codes  # type: ignore[attr-defined]
        client = device.pair_client()
        for button, expect in ((CONFIRM_PIN, "ok"), (DECLINE_PIN, "declined")):
            outcome: list[str] = []

            def send() -> None:
                try:
                    client.package("bob", "pressed")
                    outcome.append("ok")
                except RemoteError as exc:
                    outcome.append(exc.code)

            t = threading.Thread(target=send)
            t.start()
            # The screen shows the request (the buttons answer only what it shows), long enough to be read.
            screen.wait_for(lambda f: f.screen == "confirm", timeout=20)
            shown_at = time.monotonic()
            while console.waiting() and (pins.led_changes[LED_PIN] < 2 or time.monotonic() - shown_at < ARM_S + 0.1):
                screen.refresh()
                threading.Event().wait(0.01)
            assert console.snapshot().confirm.text == "pressed"
            assert pins.led_changes[LED_PIN] >= 2  # the LED blinks while the decision waits
            pins.press(button)
            t.join(20)
            assert outcome == [expect]
        assert client.status()["contacts"][0]["send"]["used"] == 16 + len("pressed")
        # Nothing waits: the LED goes out at the panel's next tick.
        deadline = time.monotonic() + 5
        while pins.leds[LED_PIN] and not console.waiting() and time.monotonic() < deadline:
            threading.Event().wait(0.01)
        assert not pins.leds[LED_PIN] or console.waiting()
    finally:
        app.close()
        panel.stop()
        server.close()


def test_refusals_raise_alarms_on_the_screen(tmp_path):
    home_a, home_b, pad_id, pad = pinned_pair(tmp_path, pin_a=None, pin_b=None)
    console = Console("bob", "touchscreen")
    server = Server(ServerConfig(home=home_b, source=PanelSource(console), console=console), "127.0.0.1", 0)
    try:
        service = server.app.extensions["otc"]
        with Device.open(home_a) as a:
            sent = a.package("bob", b"once")
        service.device.unpackage(sent.package)
        with pytest.raises(Exception):  # noqa: B017 - the engine's Replay
            service.device.unpackage(sent.package)
        alarms = console.snapshot().alarms
        assert [a.kind for a in alarms] == ["replay"] and "alice" in alarms[0].text
    finally:
        server.close()
