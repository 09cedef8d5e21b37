"""Seeing the end of a pad coming (issue 23, step 3): the chat warns at 10% and 1% left either way, says when
the device asked for more and when the split moved, and estimates messages of the usual size left.

Two real `otc chat` sessions in pseudo-terminals over real device servers and a relay (tests/chat_fixtures.py);
what is checked is what each owner reads. The counting itself (client/padwatch.py) is tested on its own too.
"""

from __future__ import annotations

import re

import pytest

from client.padwatch import DEFAULT_SIZE, PadWatch, level, messages_left
from tests.chat_fixtures import make_world


def test_levels_and_estimates():
    assert [level(left, 1000) for left in (1000, 100, 99, 10, 9, 0)] == [0, 0, 1, 1, 2, 2]
    assert messages_left(1160, 100) == 10 and messages_left(115, 100) == 0 and messages_left(-5, 10) == 0
    watch = PadWatch()
    assert watch.usual("bob", "send") == DEFAULT_SIZE
    for size in (10, 300, 40, 50, 60):
        watch.note("bob", "send", size)
    assert watch.usual("bob", "send") == 50  # the median: one long message does not skew it
    assert watch.estimate("bob", "send", 660) == "about 10 messages of the usual size, 50 bytes"


def test_each_direction_is_warned_of_once_per_level_and_again_after_it_rose():
    watch = PadWatch()

    def bob(send_left: int, receive_left: int) -> list[dict]:
        return [{"name": "bob", "send_left": send_left, "send_total": 1000, "receive_left": receive_left,
                 "receive_total": 1000}]

    assert watch.observe(bob(500, 500)) == []
    [said] = watch.observe(bob(90, 500))
    assert said.startswith("pad to send to bob: under 10% left (90 bytes, about 0 messages")
    assert watch.observe(bob(80, 500)) == []  # said once
    [said] = watch.observe(bob(80, 5))
    assert said.startswith("pad bob can send you: under 1% left (5 bytes")
    [said] = watch.observe(bob(9, 5))
    assert said.startswith("pad to send to bob: under 1% left")
    assert watch.observe(bob(600, 5)) == []  # the split moved: plenty again
    [said] = watch.observe(bob(50, 5))  # and running low once more is said again
    assert "under 10%" in said
    assert watch.observe([{"name": "carol", "send_left": 0, "send_total": 0}]) == []  # no pad: nothing to say


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path, names=("alice", "bob"), size=4096)
    yield w
    w.close()


def test_the_chat_warns_asks_and_shows_the_split_moving(world):
    alice, bob = world.chat("alice"), world.chat("bob")
    alice.wait_for("contacts: bob")
    bob.wait_for("contacts: alice")
    for i in range(12):  # 150 bytes each: 166 pad bytes of alice's 2,032; the twelfth leaves under 10%
        alice.type(f"bob: {i:02d} " + "x" * 147)
    alice.wait_for("the pad to send to bob is running low: your device asked bob's device for more", timeout=60)
    alice.wait_for("⚠ pad to send to bob: under")
    bob.wait_for("⚠ pad alice can send you: under 10% left", timeout=60)
    text = bob.wait_for("alice's device asked for more pad to send to you; your device gave ")
    # Half of what bob's device had unused (its half less twelve delivery receipts and the grant itself).
    given = int(re.search(r"your device gave (\d+) bytes of its unused pad", text).group(1))
    assert given == (2032 - 12 * (16 + 25) - 34) // 2
    alice.wait_for(f"the split moved: bob's device gave {given} bytes of pad")
    alice.type("contacts")
    text = alice.wait_for("bytes of pad left to send")
    line = next(row for row in text.splitlines() if "bytes of pad left to send" in row)
    assert f"of {2032 + given} bytes of pad left to send" in line  # alice's half and what bob gave
    assert "messages of the usual size, 150 bytes" in line
