"""Moving the split (`make bench`): the request + grant round trip through a real relay. Figures printed, never
asserted.

Two device servers (waitress, loopback, their own homes) and a relay (its production server, SQLite), each
device with a paired laptop's Messenger, as `otc recv` and the chat move packages. One round trip: alice's
device makes a request (kind 4) and her laptop hands it to the relay; bob's laptop fetches it, bob's device
opens it and gives (its policy "ask", approved by the auto source: alice is not low here, so the default "auto"
would decline), bob's laptop hands the grant to the relay; alice's laptop fetches it and her device takes the
bytes. Each device commits twice (its package and the other's) with a sync each.

Alice never uses what she is given here, so from the second round on bob's device answers with its last grant
said again (docs/pad-lifecycle.md, step 5: nothing new while it is pending): the same work (one commit, one
sealed 18-byte control package) and the same round trip; alice's device opens it as a copy ("repeated").
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from client.mailstore import MailStore  # noqa: E402
from client.messenger import Event, Messenger  # noqa: E402
from client.relay import RelayClient  # noqa: E402
from client.rpc import DeviceClient, pair  # noqa: E402
from client.state import ClientState  # noqa: E402
from device.confirm import PAIRING_CODE_FILE, AutoConfirm  # noqa: E402
from device.engine import GRANT_MODE, Device  # noqa: E402
from device.localpair import pair_local  # noqa: E402
from device.server import Server, ServerConfig  # noqa: E402
from device.storage.padstore import PadStore  # noqa: E402
from onetimechat import package as fmt  # noqa: E402
from relay.app import create_app  # noqa: E402
from relay.config import RelayConfig  # noqa: E402
from relay.server import RelayServer  # noqa: E402

ROUNDS = 40


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(len(ordered) * pct / 100), len(ordered) - 1)]


def code_reader(home: Path) -> Callable[[], str]:
    """The pairing code the auto source writes to the device's home, as a script reads it."""
    return lambda: (home / PAIRING_CODE_FILE).read_text().strip()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="otc-bench-lifecycle-") as tmp:
        root = Path(tmp)
        a, b = PadStore.init(root / "alice", "alice"), PadStore.init(root / "bob", "bob")
        pad_id = pair_local(a, b, 1 << 20)
        b.save_settings({GRANT_MODE: "ask"})
        a.close()
        b.close()
        relay = RelayServer(create_app(RelayConfig(db=f"sqlite:///{root / 'relay.db'}")), "127.0.0.1", 0,
                            threads=8).start()
        servers, people = [], {}
        try:
            for name in ("alice", "bob"):
                home = root / name
                server = Server(ServerConfig(home=home, source=AutoConfirm(home)), "127.0.0.1", 0).start()
                servers.append(server)
                state = ClientState(root / f"{name}-laptop")
                pair(server.url, name=f"{name}-laptop", state=state, ask_code=code_reader(home))
                device = DeviceClient(server.url, state=state, timeout=30)
                people[name] = Messenger(device, RelayClient(relay.url), MailStore(device.url, home=state.home))
            alice, bob = people["alice"], people["bob"]
            times, applied, repeated = [], 0, 0
            with Device.open(root / "alice") as asker:  # alice's device, asking (its owner's `otc device ask`)
                for _ in range(ROUNDS):
                    events: list[Event] = []
                    t0 = time.perf_counter()
                    request = asker.ask("bob", 100)
                    alice.relay.send(request.mailbox.hex(), fmt.encode(request.package), f"ask-{t0}")
                    while not any(e.kind == "control" for e in events):
                        bob.poll(events.append, wait=5)
                    events.clear()
                    while not any(e.kind == "control" for e in events):
                        alice.poll(events.append, wait=5)
                    times.append(time.perf_counter() - t0)
                    outcomes = [e.control.get("outcome") for e in events if e.kind == "control" and e.control]
                    applied += outcomes.count("applied")
                    repeated += outcomes.count("repeated")
                split = asker.store.pad(pad_id).split  # type: ignore[union-attr]
            print(f"request + grant round trip through a relay ({ROUNDS} rounds: {applied} grant applied, "
                  f"{repeated} said again as it was not in use yet; split now {split}): "
                  f"p50 {statistics.median(times) * 1000:.1f} ms, "
                  f"p90 {percentile(times, 90) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")
        finally:
            for server in servers:
                server.close()
            relay.close()


if __name__ == "__main__":
    main()
