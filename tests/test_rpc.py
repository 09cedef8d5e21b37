"""The device RPC over a real server on 127.0.0.1: pairing, sealed calls, confirmation."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.errors import DeviceRefused, PairingError, RemoteError
from client.rpc import DeviceClient, pair
from client.state import ClientState
from device.engine import Device
from device.pairing import lockout_delay
from onetimechat import package as fmt
from onetimechat import rpc
from onetimechat.package import Kind
from tests.conftest import otc, pad_bytes, receive_state

DOCUMENTED_HTTP_ERRORS = {
    "unauthorized", "pairing-failed", "pairing-locked", "bad-request", "invalid-name", "not-found",
    "method-not-allowed", "request-entity-too-large",
}


def send_raw(device, body: bytes) -> requests.Response:
    return requests.post(device.url + "/v1/call", data=body, timeout=30,
                         headers={"Content-Type": "application/octet-stream"})


def sealed(client: DeviceClient, method: str, **params) -> bytes:
    counter = client.state.next_counter(client.url)
    return rpc.seal_request(client.keys, client.creds.client_id, counter, {"method": method, "params": params})


def settled_state(device) -> dict:
    """The device's pad state once the server's bookkeeping has settled."""
    device.server.app.extensions["otc"].store.log_event("test-mark")  # flushes deferred rows
    state = receive_state(device.home)
    return state


def test_health_needs_no_pairing(rpc_device):
    response = requests.get(rpc_device.url + "/v1/health", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "protocol": rpc.VERSION}


def test_pairing_with_the_right_code_and_a_call(rpc_device):
    client = rpc_device.pair_client("laptop")
    assert client.ping() == {"device": "alice", "client": "laptop"}
    assert rpc_device.source.codes and rpc_device.source.cleared >= 1  # shown, then taken down
    files = list((rpc_device.tmp / "client-laptop" / "devices").glob("*.json"))
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    listed = client.clients()
    assert [(c["name"], c["this"]) for c in listed] == [("laptop", True)]
    assert "key" not in json.dumps(listed)


def test_a_wrong_code_fails_is_logged_and_burns_the_code(rpc_device):
    state = ClientState(rpc_device.tmp / "mallory")
    with pytest.raises(PairingError):
        pair(rpc_device.url, name="mallory", code="0000-0000", state=state)
    shown = rpc_device.source.codes[-1]
    if shown.replace("-", "") == "00000000":
        pytest.skip("the device happened to pick 0000-0000")
    # The code that was on show is used up: it no longer pairs.
    with pytest.raises(PairingError):
        pair(rpc_device.url, name="mallory", code=shown, state=state)
    events = Device.open(rpc_device.home).store.events()
    assert [e["event"] for e in events].count("pairing-failed") == 2
    with pytest.raises(Exception, match="not paired"):
        DeviceClient(rpc_device.url, state=state)
    assert rpc_device.pair_client("owner").ping()["client"] == "owner"


def test_repeated_wrong_codes_lock_pairing_for_a_growing_delay(rpc_device):
    state = ClientState(rpc_device.tmp / "mallory")
    for _ in range(3):
        with pytest.raises(PairingError):
            pair(rpc_device.url, name="mallory", code="0000-0001", state=state)
    response = requests.post(rpc_device.url + "/v1/pair/begin", json={"name": "mallory"}, timeout=10)
    assert response.status_code == 429
    assert response.json()["error"] == "pairing-locked"
    assert int(response.headers["Retry-After"]) >= 1
    delays = [lockout_delay(n) for n in range(1, 12)]
    assert delays[:2] == [0, 0] and all(b > a for a, b in zip(delays[2:], delays[3:-1]))
    assert max(delays) <= 3600


def test_pairing_state_machine_refuses_out_of_order_steps(rpc_device):
    begin = requests.post(rpc_device.url + "/v1/pair/begin", json={"name": "x"}, timeout=10).json()
    confirm = requests.post(rpc_device.url + "/v1/pair/confirm",
                            json={"session": begin["session"], "confirm": base64.b64encode(bytes(32)).decode()},
                            timeout=10)
    assert confirm.status_code == 401 and confirm.json()["error"] == "pairing-failed"
    stale = requests.post(rpc_device.url + "/v1/pair/exchange",
                          json={"session": begin["session"], "message": base64.b64encode(bytes(33)).decode()},
                          timeout=10)
    assert stale.status_code == 401


def test_unpaired_call_gets_401_and_changes_nothing(rpc_device):
    before = settled_state(rpc_device)
    keys = rpc.Keys.from_pairing_key(os.urandom(32))
    body = rpc.seal_request(keys, os.urandom(16), 1, {"method": "package", "params": {"contact": "bob", "text": "x"}})
    response = send_raw(rpc_device, body)
    assert response.status_code == 401 and response.json() == {"error": "unauthorized", "message": "Unauthorized."}
    assert settled_state(rpc_device) == before
    assert rpc_device.source.asked == []


def test_replayed_call_gets_401_and_consumes_nothing_more(rpc_device):
    client = rpc_device.pair_client()
    rpc_device.source.decisions.put(True)
    body = sealed(client, "package", contact="bob", text="pay 100")
    assert send_raw(rpc_device, body).status_code == 200
    before = settled_state(rpc_device)
    replay = send_raw(rpc_device, body)
    assert replay.status_code == 401 and replay.json()["error"] == "unauthorized"
    assert settled_state(rpc_device) == before
    assert len(rpc_device.source.asked) == 1


def test_any_bit_flipped_gets_401_and_changes_nothing(rpc_device):
    client = rpc_device.pair_client()
    body = sealed(client, "package", contact="bob", text="flip me")
    before = settled_state(rpc_device)
    for bit in range(len(body) * 8):
        flipped = bytearray(body)
        flipped[bit // 8] ^= 1 << (bit % 8)
        response = send_raw(rpc_device, bytes(flipped))
        assert response.status_code == 401, bit
    assert settled_state(rpc_device) == before
    assert rpc_device.source.asked == []
    rpc_device.source.decisions.put(True)
    assert send_raw(rpc_device, body).status_code == 200  # the genuine call still works


def test_reordered_calls_get_401(rpc_device):
    client = rpc_device.pair_client()
    first = sealed(client, "ping")
    second = sealed(client, "ping")
    assert send_raw(rpc_device, second).status_code == 200
    assert send_raw(rpc_device, first).status_code == 401


def test_a_response_cannot_be_swapped_for_another(rpc_device):
    client = rpc_device.pair_client()
    counter = client.state.next_counter(client.url)
    body = rpc.seal_request(client.keys, client.creds.client_id, counter, {"method": "ping", "params": {}})
    response = send_raw(rpc_device, body)
    assert rpc.open_response(client.keys, counter, response.content)["ok"]
    with pytest.raises(rpc.Unauthorized):
        rpc.open_response(client.keys, counter + 1, response.content)


def test_revoked_client_gets_401(rpc_device):
    keeper, doomed = rpc_device.pair_client("keeper"), rpc_device.pair_client("doomed")
    rpc_device.source.decisions.put(True)  # the owner approves on the device
    assert keeper.revoke(doomed.creds.client_id.hex()[:8])["revoked"]
    with pytest.raises(DeviceRefused):
        doomed.ping()
    assert keeper.ping()
    # Revoking from the device's own command line, while the server runs.
    result = otc("device", "revoke", "--home", str(rpc_device.home), keeper.creds.client_id.hex())
    assert result.returncode == 0, result.stderr
    with pytest.raises(DeviceRefused):
        keeper.ping()
    assert [e["event"] for e in Device.open(rpc_device.home).store.events()].count("client-revoked") == 2


def test_confirmation_shows_the_message_and_approval_packages(rpc_device):
    client = rpc_device.pair_client()
    rpc_device.source.decisions.put(True)
    result = client.package("bob", "meet at noon")
    request = rpc_device.source.asked[-1]
    assert (request.contact, request.plaintext, request.consumes) == ("bob", b"meet at noon", 28)
    assert request.left_after == (1 << 15) - 16 - 28
    assert result["consumed"] == 28 and result["mailbox"]
    with Device.open(rpc_device.peer_home) as bob:
        assert bob.unpackage_base64(result["package"]).plaintext == b"meet at noon"


@pytest.mark.parametrize("decision", [False, None], ids=["declined", "timed-out"])
def test_declined_and_timed_out_confirmations_consume_no_pad(rpc_device, decision):
    client = rpc_device.pair_client()
    rpc_device.restart(confirm_timeout=0.5)
    before = settled_state(rpc_device)
    before_pad = pad_bytes(rpc_device.home, rpc_device.pad_id)
    rpc_device.source.decisions.put(decision)
    with pytest.raises(RemoteError) as info:
        client.package("bob", "not this one")
    assert info.value.code == "declined"
    after = settled_state(rpc_device)
    assert after["pads"] == before["pads"] and after["consumed"] == before["consumed"]
    assert pad_bytes(rpc_device.home, rpc_device.pad_id) == before_pad
    assert client.status()["contacts"][0]["send"]["used"] == 0


def wait_for(predicate, what: str, limit: float = 20.0) -> None:
    """Poll until ``predicate()`` holds (a bound on waiting, not an assertion on time)."""
    done = threading.Event()
    for _ in range(int(limit / 0.01)):
        if predicate():
            return
        done.wait(0.01)
    raise AssertionError(f"gave up waiting for {what}")


def test_one_confirmation_at_a_time_the_rest_queue(rpc_device):
    clients = [rpc_device.pair_client(f"laptop{i}") for i in range(3)]
    broker = rpc_device.server.app.extensions["otc"].broker
    results: list = []

    def send(client: DeviceClient, text: str) -> None:
        results.append(client.package("bob", text)["contact"])

    threads = [threading.Thread(target=send, args=(c, f"message {i}")) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for shown in range(1, 4):
        wait_for(lambda: len(rpc_device.source.asked) == shown and broker.queued() == 3 - shown,
                 f"request {shown} on screen with {3 - shown} queued")
        assert len(rpc_device.source.asked) == shown  # never two on screen at once
        rpc_device.source.decisions.put(True)
    for t in threads:
        t.join(30)
    assert results == ["bob"] * 3
    assert broker.queued() == 0


def test_two_paired_clients_packaging_at_once_get_disjoint_segments(rpc_device):
    clients = [rpc_device.pair_client("one"), rpc_device.pair_client("two")]
    rpc_device.restart(confirm_timeout=30)
    for _ in range(40):
        rpc_device.source.decisions.put(True)
    packages: list[str] = []
    lock = threading.Lock()

    def work(client: DeviceClient, n: int) -> None:
        for i in range(20):
            b64 = client.package("bob", f"{n}:{i}")["package"]
            with lock:
                packages.append(b64)

    threads = [threading.Thread(target=work, args=(c, n)) for n, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    segments = sorted(fmt.parse(fmt.decode(p)).segment for p in packages)
    assert len(segments) == 40
    assert all(a[1] <= b[0] for a, b in zip(segments, segments[1:]))
    with Device.open(rpc_device.peer_home) as bob:
        texts = {bob.unpackage_base64(p).plaintext for p in packages}
    assert len(texts) == 40


def test_pairings_and_counters_survive_a_restart(rpc_device):
    client = rpc_device.pair_client()
    old = sealed(client, "ping")
    assert send_raw(rpc_device, old).status_code == 200
    rpc_device.restart()
    assert client.ping()["device"] == "alice"
    assert send_raw(rpc_device, old).status_code == 401


def test_counters_rise_across_processes_and_leave_the_credentials_file_alone(tmp_path):
    """Two processes' states share one counter file (issue 24): every counter is above every earlier one, a
    credentials file's own counter (an older otc's) still counts, and a call never rewrites the pairing key's
    file."""
    from client.state import Credentials

    ahead = 1 << 62  # a counter an older otc recorded, far above the clock
    ClientState(tmp_path).save(Credentials("http://127.0.0.1:9", bytes(16), bytes(32), "laptop", "alice"))
    path = ClientState(tmp_path)._path("http://127.0.0.1:9")
    path.write_text(json.dumps({**json.loads(path.read_text()), "counter": ahead}))
    before = (path.read_bytes(), os.stat(path).st_ino, os.stat(path).st_mtime_ns)
    first, second = ClientState(tmp_path), ClientState(tmp_path)
    counters = [state.next_counter("http://127.0.0.1:9") for _ in range(5) for state in (first, second)]
    assert counters[0] > ahead and counters == sorted(set(counters))
    assert (path.read_bytes(), os.stat(path).st_ino, os.stat(path).st_mtime_ns) == before
    path.with_suffix(".counter").write_bytes(b"\x01")  # cut short (a lost write): the clock and the rest still hold
    assert ClientState(tmp_path).next_counter("http://127.0.0.1:9") > ahead


def test_errors_are_documented_codes_without_secrets(rpc_device):
    client = rpc_device.pair_client()
    rpc_device.source.decisions.put(True)
    client.package("bob", "the secret plan")
    pad = pad_bytes(rpc_device.peer_home, rpc_device.pad_id)
    bodies = []
    url = rpc_device.url
    for method, path, kwargs in [
        ("get", "/nope", {}),
        ("get", "/v1/call", {}),
        ("post", "/v1/health", {}),
        ("post", "/v1/call", {"data": b""}),
        ("post", "/v1/call", {"data": b"OTCR" + bytes(100)}),
        ("post", "/v1/pair/begin", {"data": b"not json"}),
        ("post", "/v1/pair/begin", {"json": ["a list"]}),
        ("post", "/v1/pair/begin", {"json": {"name": "bad name!"}}),
        ("post", "/v1/pair/exchange", {"json": {"session": "zz", "message": "!!"}}),
        ("post", "/v1/pair/confirm", {"json": {"session": "00" * 16, "confirm": "AAAA"}}),
    ]:
        response = getattr(requests, method)(url + path, timeout=10, **kwargs)
        assert 400 <= response.status_code < 500, (path, response.status_code)
        body = response.json()
        assert body["error"] in DOCUMENTED_HTTP_ERRORS, body
        bodies.append(response.text)
    remote_codes = set()
    for call in [lambda: client.package("carol", "the secret plan"),
                 lambda: client.unpackage("garbage"),
                 lambda: client.call("no-such-method"),
                 lambda: client.call("events", limit="many"),
                 lambda: client.package("bob", "the secret plan " * 5000)]:
        with pytest.raises(RemoteError) as info:
            call()
        remote_codes.add(info.value.code)
        bodies.append(str(info.value))
    assert remote_codes <= {"unknown-contact", "malformed", "bad-request", "pad-exhausted"}
    text = "\n".join(bodies).encode()
    assert b"secret plan" not in text
    assert client.creds.key.hex().encode() not in text and base64.b64encode(client.creds.key) not in text
    for i in range(0, 4096, 8):
        assert pad[i : i + 8].hex().encode() not in text


def test_oversized_requests_get_413(rpc_device):
    rpc_device.restart(max_request_bytes=4096)
    response = requests.post(rpc_device.url + "/v1/call", data=bytes(10_000), timeout=10)
    assert response.status_code == 413 and response.json()["error"] == "request-entity-too-large"
    response = requests.post(rpc_device.url + "/v1/pair/begin", json={"name": "x" * 10_000}, timeout=10)
    assert response.status_code == 413


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/v1/call", "/v1/pair/begin", "/v1/pair/exchange", "/v1/pair/confirm",
                             "/v1/health", "/v2/call", "/"]),
       body=st.one_of(st.binary(max_size=300),
                      st.dictionaries(st.sampled_from(["name", "session", "message", "confirm", "x"]),
                                      st.one_of(st.text(max_size=40), st.integers(), st.none(),
                                                st.lists(st.integers(), max_size=3)), max_size=4)))
def test_fuzzed_requests_never_get_a_5xx(rpc_device, path, body):
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    response = requests.post(rpc_device.url + path, timeout=10, **kwargs)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["error"] in DOCUMENTED_HTTP_ERRORS


def test_unpackage_with_receipt(rpc_device):
    client = rpc_device.pair_client()
    with Device.open(rpc_device.peer_home) as bob:
        text = bob.package("alice", b"hi alice")
        receipt_kind = bob.package("alice", fmt.receipt_body(b"\0" * 16, 0), kind=Kind.RECEIPT)
    answer = client.unpackage(fmt.encode(text.package), receipt=True)
    assert answer["text"] == "hi alice" and answer["receipt"]["consumed"] == 41
    with Device.open(rpc_device.peer_home) as bob:
        opened = bob.unpackage_base64(answer["receipt"]["package"]).to_json()
    assert opened["receipt_for"] == {"pad_id": rpc_device.pad_id.hex(), "offset": text.offset}
    # A receipt is never answered with a receipt; no receipt unless asked.
    answer = client.unpackage(fmt.encode(receipt_kind.package), receipt=True)
    assert answer["kind"] == "receipt" and "receipt" not in answer
    assert rpc_device.source.asked == []  # receipts never ask the owner
