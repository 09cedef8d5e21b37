"""Topping up (issue 23, step 2): two devices that already share a pad pair again in person, with the same
ceremony (provisioning/), and the new pad joins the same contact. Messages go on across the boundary when the old
pad runs out, status counts every pad, and a device that is not the contact's cannot add a pad to it.
"""

from __future__ import annotations

from device.engine import ASK_MODE, Device
from device.errors import PadExhausted
from device.storage.padstore import PadStore
from provisioning.errors import CeremonyRefused
from tests import lifecycle_checker as checker
from tests.test_provisioning import homes, run_pair


def test_a_top_up_adds_a_pad_to_the_same_contact_and_messages_go_on_across_the_boundary(tmp_path):
    a, b = homes(tmp_path, "alice", "bob")
    first_host, first_join = run_pair(a, b, 4096)
    views: list = []
    host, join = run_pair(a, b, 8192, on_progress=views.append)  # they meet again: a top-up
    first, second = first_host[0], host[0]
    assert first.pad_id != second.pad_id and join[0].pad_id == second.pad_id
    # Both screens said this pad is added to the contact each already has, by name.
    compared = [v for v in views if v.stage == "compare"]  # the screen each owner confirms on
    assert sorted(v.peer for v in compared) == ["alice", "bob"] and all(v.existing for v in compared)
    for home, contact in ((a, "bob"), (b, "alice")):
        with PadStore(home) as store:
            assert store.contacts() == [contact]
            assert [p.pad_id for p in store.pads(contact)] == [first.pad_id, second.pad_id]
    with Device.open(a) as alice, Device.open(b) as bob:
        alice.store.save_settings({ASK_MODE: "off"})
        halves = (4096 // 2 - 16) + (8192 // 2 - 16)
        status = alice.status()["contacts"][0]
        assert status["send"]["total"] == halves and status["receive"]["total"] == halves  # every pad counted
        sent, pads = [], []
        while True:
            try:
                made = alice.package("bob", b"m" * 200)
            except PadExhausted:
                break
            sent.append(bytes(made.package))
            pads.append(made.pad_id)
        # The old pad first, to its end, then the new one: the conversation never stops at the boundary.
        boundary = pads.index(second.pad_id)
        assert set(pads[:boundary]) == {first.pad_id} and set(pads[boundary:]) == {second.pad_id}
        for package in sent:
            assert bob.unpackage(package).plaintext == b"m" * 200
        for pad_id, size in ((first.pad_id, 4096), (second.pad_id, 8192)):
            checker.assert_no_byte_twice([p for p, pid in zip(sent, pads) if pid == pad_id], size)
        status = alice.status()["contacts"][0]
        assert status["send"]["used"] == 216 * len(sent)
        assert status["send"]["left"] == halves - 216 * len(sent) < 216 * 2  # what is left of both ends
        assert bob.status()["contacts"][0]["receive"]["left"] == status["send"]["left"]  # both agree


def test_a_top_up_with_the_wrong_device_is_refused(tmp_path):
    a, b = homes(tmp_path, "alice", "bob")
    run_pair(a, b, 4096)
    # Another device calls itself bob: it is not the device alice shares her pad with.
    impostor = homes(tmp_path / "elsewhere", "bob")[0]
    with PadStore(a) as store:
        before = [p.pad_id for p in store.pads("bob")]
    host, join = run_pair(a, impostor, 4096)
    assert isinstance(host, CeremonyRefused) and isinstance(join, CeremonyRefused)
    with PadStore(a) as store:
        assert [p.pad_id for p in store.pads("bob")] == before  # no pad added to bob
    assert not list((impostor / "pads").iterdir())
