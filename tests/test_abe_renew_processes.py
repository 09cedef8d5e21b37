"""ABE renewal: two processes on one authority home (`otc abe renew --home` beside the device server) are
serialised by the home's lock around the re-plan and the carry-out. Ported from an outside review (abe2, D1)."""

from __future__ import annotations

import os
from pathlib import Path

from device.abe.periods import DAY_S
from device.abe.store import AbeKeys

_RACER = r'''
import os, sys, time
from pathlib import Path
import device.abe.renewal as R
from device.abe.store import AbeKeys
from device.storage.padstore import PadStore

home, role, barrier = sys.argv[1], sys.argv[2], Path(sys.argv[3])
real = R._carry_out

def widened(*args, **kwargs):  # only widens the window between the re-plan and the writes
    (barrier / role).touch()
    deadline = time.time() + 20
    while len(list(barrier.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.01)
    if role == "early":
        time.sleep(0.5)  # the other process writes first
    return real(*args, **kwargs)

R._carry_out = widened
with PadStore(home) as store:
    keys = AbeKeys(store)
    now = float(sys.argv[4])
    plan = R.plan_renewal(keys, end_period=(role == "early"), now=now)
    try:
        done = R.renew(keys, plan, os.urandom, now=now)
        print(role, "ok", [r.period for r in done])
    except Exception as exc:
        print(role, "refused", type(exc).__name__, exc)
'''


def test_D1_two_processes_renewing_one_authority_home_are_serialised(tmp_path):
    """`otc abe renew --home AUTH` (a local process) and the device server's approved abe_renew run in two
    processes. Before, _RENEWING (a threading.Lock) was the only lock: both re-planned, both saw an unchanged plan,
    both carried out, and the early end renewed under the period the other issued ahead (no early end made; an
    outside review, abe2 D1). The home's flock serialises them: the early end is made, or refused as changed."""
    import subprocess
    import sys

    from device.abe.store import grant_local
    from device.storage.padstore import PadStore

    with PadStore.init(tmp_path / "auth", "auth") as auth, PadStore.init(tmp_path / "bob", "bob") as bob, \
            PadStore.init(tmp_path / "carol", "carol") as carol:
        AbeKeys(auth).become_authority()
        grant_local(auth, bob, "STAFF")
        grant_local(auth, carol, "STAFF")
        AbeKeys(auth).revoke("bob")
        first = AbeKeys(auth).periods()[0]
    now = first.ends - 2 * DAY_S
    script = tmp_path / "racer.py"
    script.write_text(_RACER)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "auth"), role, str(barrier), str(now)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
             for role in ("ahead", "early")]
    outs = [p.communicate(timeout=120)[0].decode() for p in procs]
    print(outs)
    with PadStore(tmp_path / "auth") as auth:
        periods = AbeKeys(auth).periods()
    print([(p.number, p.starts - now, p.ends - now) for p in periods])
    early_done = any(p.starts <= now + 1 and p.number > 1 for p in periods)
    refused = any("refused" in o for o in outs)
    assert early_done or refused, f"the early end 'succeeded' but no period began early: {outs}"
