"""Evidence is never erased (issue 19): refusals are counted, security events are never rotated out.

The attacker here is written for the test: it forges call bodies by hand (the wire header of
docs/device-rpc.md with random client ids and random seals), without the client library.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import struct

import pytest
import requests

from client.errors import RemoteError
from device.engine import REFUSAL_ROWS, Device
from device.storage.padstore import EVENTS_KEPT, PadStore
from onetimechat import package as fmt
from onetimechat import rpc

ATTACK_CALLS = 150_000
OVER_HTTP = 1_500  # the rest go straight into the WSGI app's handler, to keep the test's time reasonable


def forged_call() -> bytes:
    """A call body as an outsider makes one: the right header, a random client id and counter, noise for a seal."""
    header = struct.pack(">4sB16sQ", b"OTCR", rpc.VERSION, os.urandom(16), int.from_bytes(os.urandom(4), "big") + 1)
    return header + os.urandom(48)


def event_rows(home) -> int:
    conn = sqlite3.connect(f"file:{home / 'device.db'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()


def plant_evidence(rpc_device, client) -> None:
    """A replay and a forgery, refused through the real unpackage call: the warnings the attacker wants gone."""
    with Device.open(rpc_device.peer_home) as bob:
        genuine = bob.package("alice", b"genuine").package
        second = bytearray(bob.package("alice", b"tampered").package)
    client.unpackage(fmt.encode(genuine))
    with pytest.raises(RemoteError):
        client.unpackage(fmt.encode(genuine))  # replay
    second[fmt.HEADER_LEN] ^= 1
    with pytest.raises(RemoteError):
        client.unpackage(fmt.encode(bytes(second)))  # forgery


def warning_names(status: dict) -> set[str]:
    return {w.split(":")[0] for w in status["warnings"]}


def test_warnings_survive_150000_unauthenticated_calls(rpc_device):
    client = rpc_device.pair_client()
    plant_evidence(rpc_device, client)
    assert {"replay", "invalid"} <= warning_names(client.status())
    rows_before = event_rows(rpc_device.home)

    # Part of the flood over real HTTP...
    session = requests.Session()
    for _ in range(OVER_HTTP):
        response = session.post(rpc_device.url + "/v1/call", data=forged_call(), timeout=30,
                                headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 401
    # ...and the rest through the app's handler in process (the same code the route runs).
    service = rpc_device.server.app.extensions["otc"]
    refused = 0
    for _ in range(ATTACK_CALLS - OVER_HTTP):
        try:
            service.call(forged_call())
        except Exception as exc:  # noqa: BLE001 - the test counts exactly which refusal it gets below
            assert type(exc).__name__ == "Unauthorized"
            refused += 1
    assert refused == ATTACK_CALLS - OVER_HTTP

    # Nothing was written one by one: the log holds at most a few aggregate rows (one a minute at most).
    assert event_rows(rpc_device.home) - rows_before <= 5
    service.flush_refusals()  # what the next minute (or closing the device) does
    status = client.status(events=1000)
    assert {"replay", "invalid"} <= warning_names(status)
    aggregates = [e for e in status["events"] if e["event"] == "rpc-refused"]
    assert sum(e["length"] for e in aggregates) == ATTACK_CALLS
    assert {e["event"] for e in status["events"]} >= {"replay", "invalid"}


def test_security_events_are_never_rotated_out_by_ordinary_ones(tmp_path):
    PadStore.init(tmp_path / "home", "alice").close()
    with PadStore(tmp_path / "home") as store:
        for event in ("replay", "invalid", "gap", "pairing-failed", "hrng-alarm", "wipe", "forgery-alarm"):
            store.log_event(event, detail="evidence")
        store.log_event("declined", detail="an ordinary event, old enough to rotate")
        with store._transaction() as conn:
            for _ in range(EVENTS_KEPT + 2_000):
                store._log(conn, "ceremony-started", detail="flood")
        kept = {row[0] for row in store._read("SELECT DISTINCT event FROM events")}
        ordinary = store._read("SELECT count(*) FROM events WHERE event = 'ceremony-started'")[0][0]
    assert {"replay", "invalid", "gap", "pairing-failed", "hrng-alarm", "wipe", "forgery-alarm"} <= kept
    assert "declined" not in kept and "init" not in kept  # ordinary events do rotate
    assert ordinary < EVENTS_KEPT + 1000  # rotation runs every thousandth row


def test_reading_status_between_refusals_writes_no_row_per_read(rpc_device):
    """An outside review interleaved one refused call with each status call: a row per read. Not any more."""
    client = rpc_device.pair_client()
    rows_before = event_rows(rpc_device.home)
    session = requests.Session()
    for _ in range(100):
        response = session.post(rpc_device.url + "/v1/call", data=forged_call(), timeout=30,
                                headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 401
        client.status()
    assert event_rows(rpc_device.home) - rows_before <= 1


def test_a_flood_of_junk_packages_from_a_paired_laptop_is_counted_not_written(rpc_device):
    """Junk packages through a paired laptop (or from the relay through an honest one): the first few of a
    minute are logged one by one, the rest counted into one row; the forgery alarm still counts every tag."""
    client = rpc_device.pair_client()
    rows_before = event_rows(rpc_device.home)
    junk = base64.b64encode(b"XXXX" + bytes(60)).decode()
    header = struct.pack(">4sB16sQI", b"OTC2", 1, rpc_device.pad_id, 40_000, 4)  # inside bob's half
    forged = base64.b64encode(header + b"abcd" + bytes(16)).decode()  # a tag that fails on a real pad
    for package in [junk] * 300 + [forged] * 100:
        with pytest.raises(RemoteError):
            client.unpackage(package)
    written = event_rows(rpc_device.home) - rows_before
    assert written <= REFUSAL_ROWS + 5, written  # the budget, a forgery-alarm row, an aggregate at most
    service = rpc_device.server.app.extensions["otc"]
    status = client.status()
    assert status["refusals_pending"] == 400 - REFUSAL_ROWS
    service.device.flush_refusals()  # a minute later, or at close
    status = client.status(events=100)
    aggregate = [e for e in status["events"] if e["event"] == "package-refusals"]
    assert len(aggregate) == 1 and aggregate[0]["length"] == 400 - REFUSAL_ROWS
    assert status["contacts"][0]["tag_failures"] == 100  # every forged tag counted for the alarm
    assert status["contacts"][0]["forgery_alarm"] is True
