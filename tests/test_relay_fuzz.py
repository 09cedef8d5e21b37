"""Fuzzing every relay endpoint (Hypothesis): no 5xx, no crash, every refusal JSON.

Requests mix well-formed fields (so deep paths run: sends, quotas, long polls,
acknowledgements, presence) with arbitrary JSON values, raw bytes, form bodies,
odd methods and content types. The app runs in-process on a real store, on
SQLite and on PostgreSQL, with small limits so the limits are reached.
"""

from __future__ import annotations

import json
import urllib.parse

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from onetimechat import relaywire
from relay.app import create_app
from relay.config import RelayConfig
from tests.relay_fixtures import (  # noqa: F401 - fixtures
    BACKENDS,
    fresh_db,
    postgres_fixture,
)

SETTINGS = {"rate_limit": 0, "max_waits_per_address": 0, "sweep_interval": 3600.0, "max_wait": 0.05,
            "max_message_bytes": 2048, "mailbox_max_messages": 6, "mailbox_max_bytes": 8000,
            "max_batch": 50, "max_mailboxes": 8, "max_presence_list": 20}

# Every route and the fields it reads (a test below checks this covers the app's url_map).
ENDPOINTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "/": ("GET", ()),
    "/check": ("GET", ()),
    "/send": ("POST", ("recipient_uid", "sender_uid", "contents")),
    "/getmessages": ("GET", ("recipient_uid", "start_ref", "maxcount")),
    "/getnextref": ("GET", ("recipient_uid",)),
    "/v1/info": ("GET", ()),
    "/v1/send": ("POST", ("mailbox", "contents", "sender", "id")),
    "/v1/receive": ("POST", ("mailboxes", "wait", "limit", "ack")),
    "/v1/send-bin": ("POST", ("mailbox", "id", "sender")),  # its own fuzz: tests/test_relay_parts.py
    "/v1/receive-bin": ("POST", ("mailboxes", "wait", "limit", "ack")),
    "/v1/ack": ("POST", ("mailbox", "through", "refs")),
    "/v1/announce": ("POST", ("handle", "token", "ttl")),
    "/v1/withdraw": ("POST", ("handle", "token")),
    "/v1/list": ("GET", ("limit",)),
}

mailboxes = st.sampled_from(["a", "b", "c", "0123456789abcdef0123456789abcdef", "ü☃", "x" * 128])
handles = st.sampled_from(["alice", "bob", "c.d-e_f@g+h"])
tokens = st.sampled_from(["t" * 16, "u" * 40, "v" * 256])
refs = st.integers(min_value=0, max_value=40)
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**80, max_value=2**80)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
           | st.text(alphabet=st.characters(codec="utf-8"), max_size=10))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)

PLAUSIBLE = {
    "recipient_uid": mailboxes, "sender_uid": st.text(max_size=8),
    "contents": st.text(max_size=50) | st.text(min_size=2040, max_size=2060),
    "start_ref": refs, "maxcount": refs, "mailbox": mailboxes, "sender": st.text(max_size=8),
    "id": st.text(min_size=1, max_size=6), "wait": st.floats(0, 0.1) | st.integers(0, 5),
    "limit": st.integers(1, 100), "ack": st.booleans(), "through": refs,
    "refs": st.lists(refs, max_size=5), "handle": handles, "token": tokens, "ttl": st.integers(0, 10**6),
    "mailboxes": st.dictionaries(mailboxes, refs, min_size=1, max_size=3) | st.lists(mailboxes, max_size=3),
}


@st.composite
def requests(draw):
    if draw(st.integers(0, 9)):
        path = draw(st.sampled_from(sorted(ENDPOINTS)))
    else:
        path = draw(st.sampled_from(["/nope", "/v1", "/v1/send/x", "/v1/send/", "/send//x", "/check/"]))
    method, names = ENDPOINTS.get(path, ("GET", ()))
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    fields = {}
    for name in names:
        kind = draw(st.integers(0, 9))
        if kind < 6:
            fields[name] = draw(PLAUSIBLE[name])
        elif kind < 9:
            fields[name] = draw(json_values)
    if draw(st.booleans()):
        fields.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)))
    shape = draw(st.sampled_from(["json", "json", "form", "raw", "none"]))
    headers, data, query = {}, None, ""
    if method in ("GET", "HEAD"):
        query = urllib.parse.urlencode({k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()})
    elif shape == "json":
        data = json.dumps(fields).encode()
        headers["Content-Type"] = draw(st.sampled_from(["application/json", "text/plain",
                                                         "application/x-www-form-urlencoded"]))
    elif shape == "form":
        data = urllib.parse.urlencode({k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()})
        headers["Content-Type"] = draw(st.sampled_from(["application/x-www-form-urlencoded", "multipart/form-data"]))
    elif shape == "raw":
        data = draw(st.binary(max_size=300))
        headers["Content-Type"] = draw(st.text(max_size=30).filter(lambda t: "\n" not in t and "\r" not in t))
    return method, path, query, data, headers


@pytest.fixture(scope="module", params=BACKENDS)
def fuzz_app(request, tmp_path_factory):
    app = create_app(RelayConfig(db=fresh_db(request, request.param, tmp_path_factory.mktemp("fuzz")), **SETTINGS))
    yield app
    app.extensions["otc_relay"].close()


def test_the_fuzz_table_covers_every_route(fuzz_app):
    routes = {rule.rule for rule in fuzz_app.url_map.iter_rules()}
    assert routes == set(ENDPOINTS)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(req=requests())
def test_no_request_gets_a_5xx_or_a_non_json_refusal(fuzz_app, req):
    method, path, query, data, headers = req
    client = fuzz_app.test_client()
    response = client.open(path, method=method, query_string=query, data=data, headers=headers)
    assert response.status_code < 500, (response.status_code, response.get_data()[:300])
    event(f"{response.status_code}")
    if method == "HEAD":
        return
    if path == "/v1/receive-bin" and response.status_code == 200:  # a binary batch
        relaywire.unframe(response.get_data())
        return
    assert response.mimetype == "application/json", response.get_data()[:300]
    body = json.loads(response.get_data())
    if response.status_code >= 400:
        assert set(body) == {"error", "message"} and body["error"] and body["message"]
    else:
        assert isinstance(body, dict)


def test_the_relay_still_works_after_the_fuzz(fuzz_app):
    client = fuzz_app.test_client()
    sent = client.post("/v1/send", json={"mailbox": "after-fuzz", "contents": "still here"}).get_json()
    got = client.post("/v1/receive", json={"mailboxes": {"after-fuzz": sent["ref"] - 1}}).get_json()
    assert [m["contents"] for m in got["messages"]] == ["still here"]
