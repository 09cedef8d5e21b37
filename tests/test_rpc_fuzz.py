"""Sealed calls from a paired laptop with fuzzed parameters: every method answers or refuses with a
documented code, never a 5xx, and the device keeps working (pad and rooms included)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.errors import RemoteError
from device.storage.padstore import PadStore
from onetimechat.cli import main
from tests.rpc_fixtures import rpc_device  # noqa: F401  (the fixture)

# Every method a laptop may call, except those a fuzzer must not drive: `revoke` (it could revoke
# the fuzzing laptop itself), `ceremony_start` (it would open a listening ceremony) and `abe_authority`
# (it waits for the owner; tests/test_abe_from_laptop.py checks its parameters).
METHODS = ["ping", "status", "contacts", "package", "unpackage", "events", "clients", "ceremony_status",
           "rooms", "room_add", "room_join", "room_leave", "room_receive", "room_send", "abe_status", "room_create"]
REFUSALS = {"bad-request", "malformed", "unknown-contact", "invalid", "out-of-range", "unknown-pad", "replay",
            "room", "room-epoch-changed", "room-malformed", "room-no-key", "room-not-joined", "room-refused",
            "room-unknown",
            "abe-malformed", "abe-policy", "abe-unknown-authority", "abe-not-authority", "invalid-name"}
NAMES = ["contact", "text", "package", "limit", "receipt", "invite", "room", "items", "name", "since", "policy"]

# Text with the characters JSON can carry and Python strings hold but UTF-8 cannot: lone surrogates.
texts = st.one_of(st.text(max_size=30), st.sampled_from(["ops", "carol", "", "\ud800", "ops\udfff", "A" * 5000]),
                  st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3))
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=False), texts)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(texts, inner, max_size=3)), max_leaves=8)
items = st.lists(st.one_of(st.tuples(st.integers(min_value=-3, max_value=2**64), texts).map(list), values),
                 max_size=5)
params = st.dictionaries(st.sampled_from(NAMES), values, max_size=4)


@pytest.fixture
def fuzzed(rpc_device, tmp_path, capsys):  # noqa: F811
    """The RPC device, an authority itself (so room_create runs), with a laptop paired and a room added from
    another device's authority."""
    auth = tmp_path / "authority"
    PadStore.init(auth, "auth").close()
    assert main(["abe", "authority", "--home", str(auth)]) == 0
    assert main(["abe", "authority", "--home", str(rpc_device.home)]) == 0
    capsys.readouterr()
    assert main(["room", "create", "--home", str(auth), "--name", "ops", "--policy", "A and B"]) == 0
    invite = capsys.readouterr().out.strip().splitlines()[-1]
    client = rpc_device.pair_client()
    rpc_device.source.decisions.put(True)  # adding a room is confirmed by the owner
    assert client.call("room_add", invite=invite)["room"] == "ops"
    rpc_device.source.asked.clear()
    return rpc_device, client


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(METHODS), params=params, room_items=items)
def test_fuzzed_calls_answer_or_refuse_with_a_documented_code(fuzzed, method, params, room_items):
    device, client = fuzzed
    if method == "room_receive" and "items" not in params:
        params = dict(params, room="ops", items=room_items)
    if params.get("contact") == "bob" or method in ("room_send", "room_leave") and params.get("room") == "ops":
        params = dict(params, contact="carol", room="nosuch")  # these would wait for the owner's answer
    try:
        client.call(method, **params)
    except RemoteError as exc:
        assert exc.code in REFUSALS, (method, params, exc.code, str(exc))
    # The device still serves this laptop after each call.
    assert client.call("ping")["device"] == "alice"


@pytest.mark.parametrize("text", ["\ud800", "caf\u00e9 \udfff", "\udc80" * 10])
def test_text_that_utf8_cannot_hold_is_refused_before_the_owner_is_asked(fuzzed, text):
    device, client = fuzzed
    for method, params in (("package", {"contact": "bob", "text": text}), ("room_send", {"room": "ops", "text": text}),
                           ("room_add", {"invite": text}), ("events", {"since": text})):
        with pytest.raises(RemoteError) as info:
            client.call(method, **params)
        assert info.value.code == "bad-request", (method, info.value.code)
    assert device.source.asked == []  # nothing reached the confirmation screen
    assert client.call("ping")["device"] == "alice"
