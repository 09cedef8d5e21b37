"""Stopping a relay, and waiting on one (a user following the README cold found these).

* `otc recv --wait N` with nothing arriving waits out its time in a few long polls; it asked with ``wait`` 0
  again and again in its last second until rate limited (429).
"""

from __future__ import annotations

from tests.chat_fixtures import make_world
from tests.conftest import otc

HANG_GUARD_S = 60  # only against a hang; nothing here is timed


def test_recv_waits_out_its_time_in_a_few_polls_when_nothing_arrives(tmp_path):
    world = make_world(tmp_path, names=("alice", "bob"))
    try:
        polls: list[str] = []
        app = world.relay.app
        inner = app.wsgi_app

        def counting(environ, start_response):
            if environ["PATH_INFO"].startswith("/v1/receive"):
                polls.append(environ["PATH_INFO"])
            return inner(environ, start_response)

        app.wsgi_app = counting
        bob = world.people["bob"].laptop
        done = otc("recv", "--relay", world.relay_url, "--wait", "2", env={"OTC_CLIENT_HOME": str(bob)},
                   timeout=HANG_GUARD_S)
        assert done.returncode == 0, done.stderr.decode()
        assert done.stderr == b"" and done.stdout == b""
        assert 1 <= len(polls) <= 3, polls  # it asked ~220 times before, until the relay answered 429
    finally:
        world.close()
