"""Adding and leaving a room are confirmed on the device (issue 19): a hostile paired laptop cannot do either alone.

The hostile laptop is written here: it calls ``room_add`` and ``room_leave`` over the RPC directly. While the
owner declines (or is away), nothing changes: no room is added, no membership key is deleted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from client.errors import RemoteError
from client.relay import RelayClient
from client.rooms import RoomClient
from client.rpc import DeviceClient, pair
from client.state import ClientState
from device.abe.store import grant_local
from device.confirm import ConfirmRequest
from device.storage.padstore import PadStore
from onetimechat.cli import main
from relay.app import create_app
from relay.config import RelayConfig
from relay.server import RelayServer
from tests.chat_fixtures import OwnerSource, Person


class Owner(OwnerSource):
    """Declines the kinds in ``decline_kinds``; records every kind asked."""

    def __init__(self) -> None:
        super().__init__()
        self.decline_kinds: set[str] = set()
        self.kinds: list[str] = []

    def ask(self, request: ConfirmRequest, timeout: float) -> bool:
        self.kinds.append(request.kind)
        return super().ask(request, timeout) and request.kind not in self.decline_kinds


@contextmanager
def paired(tmp_path, name: str, owner: OwnerSource) -> Iterator[tuple[RelayServer, Person, ClientState]]:
    """A relay, the device of the home ``tmp_path/name`` (made before) confirming with ``owner``, and a laptop
    paired with it; stopped after."""
    relay = RelayServer(create_app(RelayConfig(db=f"sqlite:///{tmp_path / 'relay.db'}", min_free_bytes=0)),
                        "127.0.0.1", 0, threads=4).start()
    person = Person(name, tmp_path / name, tmp_path / f"{name}-laptop", owner)
    person.start()
    try:
        state = ClientState(person.laptop)
        pair(person.url, name=f"{name}-laptop", ask_code=lambda: owner.codes[-1], state=state)
        yield relay, person, state
    finally:
        person.stop()
        relay.close()


def test_room_add_and_room_leave_need_the_owners_approval(tmp_path, capsys):
    PadStore.init(tmp_path / "auth", "auth").close()
    assert main(["abe", "authority", "--home", str(tmp_path / "auth")]) == 0
    PadStore.init(tmp_path / "bob", "bob").close()
    with PadStore(tmp_path / "auth") as auth, PadStore(tmp_path / "bob") as member:
        grant_local(auth, member, "STAFF")
    owner = Owner()
    with paired(tmp_path, "bob", owner) as (relay, bob, state):
        hostile = DeviceClient(bob.url, state=state)
        capsys.readouterr()
        assert main(["room", "create", "--home", str(tmp_path / "auth"), "--name", "ops", "--policy", "STAFF"]) == 0
        invite = capsys.readouterr().out.strip().splitlines()[-1]

        owner.decline_kinds = {"room-add"}
        with pytest.raises(RemoteError) as declined:
            hostile.call("room_add", invite=invite)
        assert declined.value.code == "declined"
        assert owner.kinds[-1] == "room-add" and "Add the room ops?" in owner.asked[-1]
        assert hostile.call("rooms") == []

        owner.decline_kinds = set()
        assert hostile.call("room_add", invite=invite)["room"] == "ops"
        asked = len(owner.kinds)
        assert hostile.call("room_add", invite=invite)["room"] == "ops"  # already there: nothing to ask
        assert len(owner.kinds) == asked
        rooms = RoomClient(hostile, RelayClient(relay.url))
        rooms.join("ops")
        for _ in range(2):
            rooms.sync("ops")
        assert rooms.room("ops")["joined"]

        owner.decline_kinds = {"room-leave"}
        with pytest.raises(RemoteError) as declined:
            hostile.call("room_leave", room="ops")
        assert declined.value.code == "declined"
        assert owner.kinds[-1] == "room-leave" and "Leave the room ops?" in owner.asked[-1]
        assert rooms.room("ops")["joined"]  # its membership keys are still there

        owner.decline_kinds = set()
        assert hostile.call("room_leave", room="ops")["post"]
        assert not rooms.room("ops")["joined"]


class _Yes:
    def ask(self, request) -> bool:
        return True


def test_join_counts_only_keys_whose_period_is_running(tmp_path):
    """An outside review: an expired STAFF,ADMIN key and a current OPS key let a device join a 'STAFF and
    ADMIN' room it could never read (the check used every key, the contribution the current one)."""
    import time

    import pytest

    from device.abe.store import AbeKeys, grant_local
    from device.rooms.errors import RoomError
    from device.rooms.service import DeviceRooms
    from device.storage.padstore import PadStore

    auth, member = PadStore.init(tmp_path / "campus", "campus"), PadStore.init(tmp_path / "dora", "dora")
    try:
        keys = AbeKeys(auth)
        keys.become_authority()
        now = time.time()
        first = keys.next_period(30 * 86400, now=now - 40 * 86400)  # ended ten days ago
        grant_local(auth, member, "STAFF,ADMIN", first)
        grant_local(auth, member, "OPS", keys.next_period(30 * 86400))
        room = DeviceRooms(auth, _Yes()).create("ops", "STAFF and ADMIN")
        rooms = DeviceRooms(member, _Yes())
        rooms.add(room)
        with pytest.raises(RoomError, match="do not satisfy"):
            rooms.join("ops", "dora")
    finally:
        auth.close()
        member.close()


def test_an_invite_whose_policy_names_a_key_period_is_refused(tmp_path):
    import dataclasses

    import pytest

    from device.abe.policy import Policy
    from device.abe.store import AbeKeys
    from device.rooms.errors import RoomError
    from device.rooms.service import DeviceRooms
    from device.storage.padstore import PadStore

    auth, member = PadStore.init(tmp_path / "campus", "campus"), PadStore.init(tmp_path / "dora", "dora")
    try:
        AbeKeys(auth).become_authority()
        room = DeviceRooms(auth, _Yes()).create("ops", "OPS")
        forged = dataclasses.replace(room, policy=Policy.parse("OPS or PERIOD_1"))  # a hand-made invite
        with pytest.raises(RoomError, match="reserved"):
            DeviceRooms(member, _Yes()).add(forged)
    finally:
        auth.close()
        member.close()


def test_a_rooms_invite_is_shown_again_from_the_device(tmp_path, capsys, monkeypatch):
    """A lost invite (a cold run: nothing showed it again) is printed by `otc room invite ROOM` from the room the
    device holds; an unknown room is one line and a non-zero exit."""
    PadStore.init(tmp_path / "auth", "auth").close()
    assert main(["abe", "authority", "--home", str(tmp_path / "auth")]) == 0
    PadStore.init(tmp_path / "bob", "bob").close()
    with PadStore(tmp_path / "auth") as auth, PadStore(tmp_path / "bob") as member:
        grant_local(auth, member, "STAFF")
    with paired(tmp_path, "bob", Owner()) as (relay, bob, state):
        monkeypatch.setenv("OTC_CLIENT_HOME", str(bob.laptop))
        cli = ["--device", bob.url, "--relay", relay.url]
        capsys.readouterr()
        assert main(["room", "create", "--home", str(tmp_path / "auth"), "--name", "ops", "--policy", "STAFF"]) == 0
        invite = capsys.readouterr().out.strip().splitlines()[-1]
        assert main(["room", "add", *cli, invite]) == 0
        capsys.readouterr()
        assert main(["room", "invite", *cli, "ops"]) == 0
        out = capsys.readouterr().out.strip().splitlines()
        assert out == ["Room ops (STAFF). Invite:", invite]
        assert main(["room", "invite", *cli, "nope"]) != 0
        _, err = capsys.readouterr()
        assert err.count("\n") == 1 and "knows no room 'nope'" in err
