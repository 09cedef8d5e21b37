"""The lean path for POST /v1/send and /v1/receive (relay/app.py, HotPath) answers as Flask does, to the byte.

Two relays on two fresh stores with one fixed clock get the same requests from the same addresses: one through
the lean path (its Flask app replaced by one that fails the test, so every answer is the lean path's own), the
other through Flask alone. Status, headers and body must be equal, refusals and rate limits included; what the
lean path hands on (other paths, other methods, a body over the limit) is Flask's answer as before.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder

from relay.app import HotPath, create_app
from relay.config import RelayConfig
from tests.relay_fixtures import BACKENDS, Clock, fresh_db, postgres_fixture  # noqa: F401 - a fixture

LIMITS = {"min_free_bytes": 0, "sweep_interval": 3600.0, "max_message_bytes": 64, "mailbox_max_messages": 3,
          "rate_limit": 0.3, "rate_burst": 2, "max_waits_per_address": 0, "address_new_mailboxes": 0}

SENDS = [
    b'{"mailbox": "box", "contents": "aGk=", "id": "k1"}',
    b'{"mailbox": "box", "contents": "aGk=", "id": "k1"}',
    '{"mailbox": "bo\u00eete", "contents": "caf\u00e9 \u2603"}'.encode(),
    b'{"mailbox": "box", "contents": "second", "sender": "ann"}',
    b'{"mailbox": "box", "contents": "third"}',
    b'{"mailbox": "box", "contents": "full now"}',
    json.dumps({"mailbox": "big", "contents": "A" * 65}).encode(),
    b" ", b"not json", b"[1, 2]", b'{"mailbox": 5, "contents": "x"}', b'{"mailbox": "a\\u0000b", "contents": "x"}',
    b'{"mailbox": "box", "contents": "x", "id": ""}', b"[" * 5000 + b"]" * 5000,
]
RECEIVES = [
    b'{"mailboxes": {"box": 0, "bo\\u00eete": 0}}', b'{"mailboxes": {"box": 0}, "limit": 1}',
    b'{"mailboxes": {"box": 1}, "ack": true, "wait": 0}', b'{"mailboxes": ["box"]}',
    b'{"mailboxes": {"box": 0}, "ack": 1}', b'{"mailboxes": {}}', b'{"mailboxes": {"box": -1}}',
    b'{"mailboxes": {"box": 0}, "wait": true}',
]
# (client address, path, body, content type): every client address is new, except the last one's, which runs
# out of its rate (0.3 a second, a burst of 2: its third request is a 429 with Retry-After 4). The lean path
# reads any content type as JSON, as Flask's routes do.
REQUESTS: list[tuple[str, str, bytes, str]] = [
    *((f"127.0.1.{n + 1}", "/v1/send", body, ("application/json", "text/plain", "")[n % 3])
      for n, body in enumerate(SENDS)),
    *((f"127.0.2.{n + 1}", "/v1/receive", body, "application/json") for n, body in enumerate(RECEIVES)),
    *(("127.0.3.1", path, body, "application/json") for path, body in (
        ("/v1/receive", b'{"mailboxes": {"box": 0}}'), ("/v1/send", b'{"mailbox": "other", "contents": "x"}'),
        ("/v1/receive", b'{"mailboxes": {"box": 0}}'))),
]


def call(app: Any, remote: str, method: str, path: str, body: bytes, content_type: str,
         **headers: str) -> tuple[str, list[tuple[str, str]], bytes]:
    environ = EnvironBuilder(path=path, method=method, data=body, content_type=content_type or None,
                             headers=headers, environ_base={"REMOTE_ADDR": remote}).get_environ()
    started: list[Any] = []
    chunks = app(environ, lambda status, headers, exc_info=None: started.append((status, headers)))
    data = b"".join(chunks)
    getattr(chunks, "close", lambda: None)()
    status, response_headers = started[0]
    return status, list(response_headers), data


def two_relays(request: pytest.FixtureRequest, backend: str, tmp_path) -> tuple[HotPath, Any, list[Any]]:
    """(the lean path of one relay, the Flask app of another, both apps): fresh stores, one fixed clock."""
    clock = Clock()
    apps = []
    for name in ("lean", "flask"):
        folder = tmp_path / name
        folder.mkdir()
        apps.append(create_app(RelayConfig(db=fresh_db(request, backend, folder), **LIMITS), clock=clock))
    # One store identity for both, as one store's: answers carry it (docs/relay-protocol.md, "Store identity").
    apps[1].extensions["otc_relay"].store_id = apps[0].extensions["otc_relay"].store_id
    lean = apps[0].wsgi_app
    assert isinstance(lean, HotPath)
    return lean, apps[1].wsgi_app.flask_app, apps


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_lean_path_answers_as_flask_does_to_the_byte(request, backend, tmp_path):
    lean, flask_app, apps = two_relays(request, backend, tmp_path)
    handed_on = lean.flask_app

    def not_flask(environ: Any, start_response: Any) -> Any:
        pytest.fail(f"the lean path handed {environ['PATH_INFO']} to Flask")

    lean.flask_app = not_flask
    try:
        answers = []
        for remote, path, body, content_type in REQUESTS:
            mine = call(lean, remote, "POST", path, body, content_type)
            theirs = call(flask_app, remote, "POST", path, body, content_type)
            assert mine == theirs, (path, body[:80])
            answers.append(mine)
    finally:
        lean.flask_app = handed_on
        for app in apps:
            app.extensions["otc_relay"].close()
    statuses = [status for status, _, _ in answers]
    # What the requests were meant to reach: sends, a duplicate, a full mailbox, refusals, reads, a rate limit.
    assert statuses[:6] == ["200 OK"] * 5 + ["429 TOO MANY REQUESTS"]
    assert json.loads(answers[1][2])["duplicate"] is True
    assert json.loads(answers[6][2])["error"] == "too-large"
    assert {json.loads(a[2])["error"] for a in answers[7:14]} == {"bad-request"}
    assert [m["contents"] for m in json.loads(answers[14][2])["messages"]] == ["aGk=", "second", "third",
                                                                               "caf\u00e9 \u2603"]
    assert b"\\u00e9" in answers[14][2]  # ASCII on the wire, as jsonify writes it
    assert json.loads(answers[16][2])["messages"][0]["ref"] == 2
    assert statuses[-1] == "429 TOO MANY REQUESTS" and ("Retry-After", "4") in answers[-1][1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_what_the_lean_path_does_not_serve_is_flasks_as_before(request, backend, tmp_path):
    lean, flask_app, apps = two_relays(request, backend, tmp_path)
    try:
        too_big = b'{"mailbox": "box", "contents": "' + b"A" * 200_000 + b'"}'
        for n, (method, path, body, headers) in enumerate([
            ("GET", "/v1/send", b"", {}),
            ("POST", "/v1/send", b"", {}),  # no Content-Length
            ("PUT", "/v1/receive", b"{}", {}),
            ("POST", "/v1/send/", b'{"mailbox": "box", "contents": "x"}', {}),
            ("POST", "/v1/send", too_big, {}),
            ("POST", "/v1/ack", b'{"mailbox": "box", "through": 1}', {}),
            ("GET", "/v1/info", b"", {}),
        ]):
            remote = f"127.0.4.{n + 1}"
            mine = call(lean, remote, method, path, body, "application/json", **headers)
            theirs = call(flask_app, remote, method, path, body, "application/json", **headers)
            assert mine == theirs, (method, path)
            assert mine[0] != "200 OK" or path in ("/v1/ack", "/v1/info")
    finally:
        for app in apps:
            app.extensions["otc_relay"].close()
