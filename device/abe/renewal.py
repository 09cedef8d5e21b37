"""Renewing attribute keys over a pad, without meeting (issue 22; DESIGN.md "Devices, relays and stores under attack").

**The renewal pad.** The grant ceremony (device/abe/grant.py) also makes a
small one-time pad between authority and member, as pad pairing makes its
pads: over the ceremony's sealed link, each device draws a share from its
random source (the HRNG mixer when it has one), sends a commitment to the
whole share (SHA-256 with a label) before it sees the other's, then the
share; each checks the other's share against its commitment, and the pad is
the XOR of both. Neither device alone chooses it. Its id and relay mailbox
are HKDF outputs of the pad (they reveal nothing of it). It is stored with
the grant, pending until both devices are known to hold the grant (and so
the pad), sealed under the storage key in a PIN-locked home.

**A renewal** is a package v2 of kind 4 (control) on that pad, from the
authority (the pad's initiator: R = pad[0:16], segments from offset 16
upward; the pad has no member-to-authority direction). Its plaintext is::

    "OREN" | version 4 | period (4) | starts (8, float) | ends (8, float) | member key (docs/abe.md kind 3)
           | g2^a (G2, 96) | room secrets ("R" | n x (room id 16 | secret 32)) | their length (2)

Version 4 carries the period's secret of each room of the authority's that its device knows and whose policy
the key's attributes satisfy (docs/rooms.md "Period secrets, per room": a member's room contributions of the
period are bound and tagged with it). Version 3 carried the authority's period secret itself, from which any key
holder could derive every room's; a member still reads it (and versions 1 and 2, without any), and a member
device of older software refuses version 4 as malformed (no pad byte used) and opens it once updated.

Version 2 carries the authority's g2^a (an outside review, issue 22: it binds C0 in the consistency check), so
a member granted before it gets it with its next renewal; the member checks it against g1^a and keeps it with
the public key. A member still reads version 1 (from an authority's older software); a member device of older
software refuses version 2 as malformed, changing nothing (no pad byte is used), and opens it once updated
(``otc abe renew --resend`` posts it again).

The authority reserves the segment, builds the package and overwrites the
segment's bytes in one transaction before the package leaves the device
(reserve before use, destroy after use). The member's device opens it only
at or after the pad's frontier (anything before it is used: refused before
a pad byte is read), checks the tag (Wegman-Carter, information-theoretic),
that the key matches the authority's public key and carries the period it
says, stores the key for that period, and overwrites the bytes up to the
segment's end, in one transaction (the check and the use cannot be split
by another open). A forged, altered or replayed package changes nothing
but the log: renewal pads are one-time pads under the pad store's rules
(device/storage/padstore.py), so a failed tag is counted on its pad and the
third raises the forgery alarm, and refusals are logged within the
device's RefusalBudget as evidence kept through log rotation.

**Sending again.** The authority keeps each renewal package it sent, byte
for byte (device/storage/sent_renewals.py), until the key's period is over.
A package the relay lost is re-sent as it was (``otc abe renew --resend``):
no pad byte is used again and nothing new is issued, so the same pad bytes
never carry two different contents. The member's device opens it once; a
second copy is refused as opened already.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from device.abe.encoding import MemberKey, decode_member_key
from device.abe.errors import AbeError, MalformedAbeData, Revoked, UnknownMember
from device.abe.group import G2_BYTES, g2_decode
from device.abe.periods import MAX_PERIOD_S, Period, when
from device.abe.policy import period_attribute
from device.abe.store import AbeKeys, HeldKey, check_room_secrets, renewal_for
from device.errors import OutOfRange, Replay, UnknownPad
from device.storage import sent_renewals
from device.storage.padstore import RefusalBudget
from onetimechat import package as fmt
from onetimechat.crypto import derive_key, equal
from onetimechat.errors import InvalidPackage, MalformedPackage
from onetimechat.text import plural
from provisioning.errors import CeremonyBroken
from provisioning.wire import Wire

PAD_BYTES = 32 << 10  # about 60 renewals of a key with a few attributes
PAD_BINDING = "otc abe renewal pad binding v1"
COMMIT_LABEL = b"otc abe renewal pad commitment v1\x00"
BODY = struct.Struct(">4sBIdd")
BODY_MAGIC = b"OREN"
BODY_VERSION = 4
BODY_VERSIONS = (1, 2, 3, 4)  # a member reads all (1: without g2^a; 2: without a secret; 3: the period's secret)
PERIOD_SECRET_BYTES = 32


class RenewalRefused(AbeError):
    """The renewal package was refused: forged, altered, replayed, or not for this device."""

    code = "abe-renewal-refused"


class NoRenewalPad(AbeError):
    """There is no renewal pad with that member (granted before renewal pads, or on one machine)."""

    code = "abe-no-renewal-pad"


# -- the pad, made in the grant ceremony ----------------------------------------------------------------------


def _commitment(share: bytes, role: str, binding: bytes) -> bytes:
    """A share's commitment, bound to this session and the sender's role: the other side's commitment played
    back (and then the other's share) is never this side's (an outside review made the pad all zeros so)."""
    return hashlib.sha256(COMMIT_LABEL + binding + role.encode() + b"\x00" + share).digest()


def make_pad(wire: Wire, random_bytes: Callable[[int], bytes], role: str = "authority") -> bytes:
    """Both devices' shares, committed before either sees the other's, XORed: the renewal pad. ``role`` is
    this device's ("authority" or "member")."""
    if role not in ("authority", "member"):
        raise ValueError("role is authority or member")
    peer_role = "member" if role == "authority" else "authority"
    binding = wire.export(PAD_BINDING)
    share = random_bytes(PAD_BYTES)
    if len(share) != PAD_BYTES:
        raise CeremonyBroken("This device's random source gave too few bytes.")
    wire.send({"t": "pad-commit"}, _commitment(share, role, binding))
    message, theirs_commitment = wire.recv()
    if message.get("t") != "pad-commit" or len(theirs_commitment) != 32:
        raise CeremonyBroken("The other device broke the grant protocol.")
    wire.send({"t": "pad-share"}, share)
    message, theirs = wire.recv()
    if message.get("t") != "pad-share" or len(theirs) != PAD_BYTES:
        raise CeremonyBroken("The other device broke the grant protocol.")
    if hmac.compare_digest(theirs, share) or not hmac.compare_digest(_commitment(theirs, peer_role, binding),
                                                                     theirs_commitment):
        raise CeremonyBroken("The other device's pad share does not match its commitment: it chose it after "
                             "seeing this one's. The grant stopped.")
    return fmt.xor(share, theirs)


def pad_identity(pad: bytes) -> tuple[bytes, bytes]:
    """(pad_id, mailbox) of a renewal pad: derived from it, revealing nothing of it."""
    return derive_key(pad, "otc abe renewal pad id v1", 16), derive_key(pad, "otc abe renewal mailbox v1", 16)


# -- the store ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Renewal:
    """A renewal package for one member, ready for the relay (never the key)."""

    member: str
    key_id: bytes
    mailbox: str
    package: str  # base64
    period: int | None = None  # the key's period (known when it was just issued)

    def to_dict(self) -> dict:
        return {"member": self.member, "key_id": self.key_id.hex(), "mailbox": self.mailbox,
                "package": self.package, **({"period": self.period} if self.period is not None else {})}


class RenewalPads:
    """The renewal pads of one device (table abe_pads, schema step 8)."""

    def __init__(self, keys: AbeKeys, refusals: RefusalBudget | None = None) -> None:
        self.keys = keys
        self.store = keys.store
        self.tables = keys.tables
        #: Refusals of renewals are package refusals: logged one by one within this budget, counted beyond it
        #: (the device's server passes its own, device/abe/rpc.py).
        self.refusals = refusals if refusals is not None else RefusalBudget()

    def add(self, pad: bytes, key_id: bytes, authority_id: bytes, peer_device_id: bytes | None, role: str) -> bytes:
        """Keep a pad made in a grant, pending with that grant (key ``key_id``); its pad_id."""
        pad_id, mailbox = pad_identity(pad)
        self.tables.add_renewal_pad(pad, pad_id, mailbox, key_id, authority_id, peer_device_id, role)
        return pad_id

    def mailboxes(self) -> list[str]:
        """The member's renewal mailboxes (confirmed pads), for the laptop to read."""
        return [mailbox.hex() for mailbox in self.tables.member_mailboxes()]

    def describe(self) -> list[dict]:
        rows = self.tables.renewal_pad_rows()
        return [{"pad_id": bytes(r[0]).hex(), "role": r[1], "left": max(0, r[2] - r[3]), "confirmed": bool(r[4])}
                for r in rows]

    # -- the authority ------------------------------------------------------------------------------------

    def plan(self, who: str | None = None, period: int = 1) -> tuple[list[tuple[bytes, str]], list[str]]:
        """Whom a renewal reaches: ([(member device id, name)] with a pad with room for it and not revoked, [names
        left out and why]). ``who``: one member (a name or key id), else every member; ``period``: the period
        number it issues (its attribute's length counts in the pad bytes a renewal takes)."""
        everyone = self.keys.issued()  # read once: a renewal of 50 members read it 101 times
        issued = self.keys.find_issued(who) if who is not None else everyone
        devices: dict[bytes, str] = {}
        for i in issued:
            if i.member_device_id is not None:
                devices[i.member_device_id] = i.member
        with_pad = self.tables.members_with_pad()
        holding = {i.member_device_id for i in everyone if i.period == period}
        out, left, already = [], [], []
        for device_id, name in devices.items():
            try:
                prior = renewal_for(self.keys, device_id, everyone)
            except Revoked:
                left.append(f"{name}: revoked")
                continue
            if device_id in holding:  # renewed already: nothing to issue, nothing to ask (a cold run was asked)
                already.append(f"{name}: already holds a key of period {period}")
                continue
            if device_id not in with_pad:
                left.append(f"{name}: no renewal pad (granted before them, or on one machine): renew in person")
                continue
            attributes = (*prior.attributes, period_attribute(period))
            rooms = self.keys.room_secrets_for(period, attributes)
            if self.tables.pad_room(device_id) < fmt.segment_length(renewal_length(attributes, len(rooms))):
                left.append(f"{name}: renewal pad used up: renew in person (a grant makes a new one)")
                continue
            out.append((device_id, name))
        if who is not None and not out and not already:
            raise (Revoked if any(x.endswith("revoked") for x in left) else NoRenewalPad)(
                f"{who[:40]} gets no renewal: {'; '.join(left)}.")
        return out, left + already

    def renew(self, device_id: bytes, period: Period, random_bytes: Callable[[int], bytes]) -> Renewal | None:
        """Issue ``device_id``'s member a key for ``period`` and seal it on their renewal pad (None: it already
        has one for that period)."""
        prior = renewal_for(self.keys, device_id)
        if any(i.member_device_id == device_id and i.period == period.number for i in self.keys.issued()):
            return None
        pad_ids = self.tables.pads_to(device_id)
        if not pad_ids:
            raise NoRenewalPad(f"There is no renewal pad with {prior.member}.")
        # The key's record is written with the package that carries it, in one commit (seal_on_renewal_pad).
        key, record = self.keys.make_key(prior.attributes, member=prior.member, member_device_id=device_id,
                                         how="renewal over the pad", random_bytes=random_bytes, period=period)
        public = self.keys.master().public
        assert public.g2_a is not None  # a master key always gives it
        rooms = self.keys.room_secrets_for(period.number, key.all_attributes)
        body = (BODY.pack(BODY_MAGIC, BODY_VERSION, period.number, period.starts, period.ends) + key.encode()
                + bytes(public.g2_a.to_compressed_bytes()) + rooms + struct.pack(">H", len(rooms)))
        for pad_id in pad_ids:
            sealed = self.tables.seal_on_renewal_pad(  # reserve, build, destroy, keep: one commit, before it leaves
                pad_id, len(body),
                lambda offset, segment, auth_key: bytes(
                    fmt.seal(fmt.Kind.CONTROL, pad_id, offset, segment, body, auth_key)),  # noqa: B023 - called at once
                detail=f"key for period {period.number} to {prior.member}",
                # Kept with the pad's use, in the same commit: a lost package can be sent again as it was.
                keep=lambda package, mailbox: dict(
                    Renewal(prior.member, key.key_id, mailbox.hex(), fmt.encode(package)).to_dict(),
                    period=period.number, ends=period.ends),
                issued=record)
            if sealed is None:
                continue  # this pad is used up: the next one, if any
            package, mailbox = sealed
            return Renewal(prior.member, key.key_id, mailbox.hex(), fmt.encode(package), period.number)
        raise NoRenewalPad(f"The renewal pad with {prior.member} is used up: renew in person (a grant makes a "
                           "new one).")

    def resend(self, who: str | None = None, now: float | None = None) -> list[Renewal]:
        """The renewal packages sent for periods not over yet (to ``who`` only, a name or key id, if given), as
        they were: nothing issued, no pad byte used. A package is not sent again to a revoked member device (any
        key issued to that device revoked: ``otc abe revoke KEYID`` names its grant key, not the renewal's); those
        of periods over are forgotten."""
        now = time.time() if now is None else now
        records = sent_renewals.load(self.store)
        # A period ended early, or withdrawn (issued ahead, then replaced), is over at its end in the records now.
        ends = {p.number: p.ends for p in self.keys.periods()}
        for r in records:
            r["ends"] = min(r["ends"], ends.get(r["period"], r["ends"]))
        sent_renewals.forget(self.store, [r["key_id"] for r in records if r["ends"] <= now])
        issued = self.keys.issued()
        revoked_devices = {i.member_device_id for i in issued if i.revoked is not None and i.member_device_id}
        revoked = {i.key_id.hex() for i in issued if i.revoked is not None or i.member_device_id in revoked_devices}
        out = [Renewal(r["member"], bytes.fromhex(r["key_id"]), r["mailbox"], r["package"]) for r in records
               if r["ends"] > now and r["key_id"] not in revoked
               and (who is None or who in (r["member"], r["key_id"]) or (len(who) >= 8 and r["key_id"].startswith(
                   who.lower())))]
        if who is not None and not out:
            raise UnknownMember(f"No renewal sent to {who[:40]} is waiting for its period (nothing to re-send).")
        return out

    # -- the member -----------------------------------------------------------------------------------------

    def open(self, data: bytes) -> HeldKey:
        """Open a renewal package on this device: the key it carries, stored. RenewalRefused otherwise.

        Under the pad store's rules, in one transaction (AbeTables.open_on_renewal_pad): a segment outside the
        pad or below its frontier (used) is refused before a pad byte is read; a failed tag is counted on the
        pad (the forgery alarm from the third); refusals are logged within this device's RefusalBudget."""
        try:
            parsed = fmt.parse(data)
        except MalformedPackage:
            raise RenewalRefused("That is not a renewal package.") from None
        authority_id = self.tables.member_pad_authority(parsed.pad_id)
        if parsed.kind != fmt.Kind.CONTROL or authority_id is None:
            raise RenewalRefused("That renewal is for no renewal pad of this device.")
        public = next((p for p in self._publics() if equal(p.authority_id, authority_id)), None)
        if public is None:
            raise RenewalRefused("This device no longer knows the renewal's authority.")
        opened: list[bytes] = []

        def open_renewal(segment: bytes, auth_key: bytes) -> dict:
            body = fmt.open_package(parsed, segment, auth_key)  # InvalidPackage: counted, nothing else changes
            # Verified: the authority made it. The key is stored and the bytes up to its end destroyed, one commit.
            try:
                magic, version, number, starts, ends = BODY.unpack_from(body)
                if magic != BODY_MAGIC or version not in BODY_VERSIONS or not 0 < ends - starts <= MAX_PERIOD_S:
                    raise MalformedAbeData()
                if version >= 4:  # the room secrets, then their length (2)
                    tail = len(body) - 2 - struct.unpack(">H", body[-2:])[0]
                    secret: bytes | None = check_room_secrets(body[tail:-2])
                else:
                    secret = body[len(body) - PERIOD_SECRET_BYTES:] if version == 3 else None
                    tail = len(body) - (PERIOD_SECRET_BYTES if version == 3 else 0)
                end = tail - (G2_BYTES if version >= 2 else 0)
                if end < BODY.size:
                    raise MalformedAbeData()
                key = decode_member_key(body[BODY.size:end])
                if key.period != number:
                    raise MalformedAbeData()
                # g2^a is checked against g1^a (with_g2_a): the key stored with it keeps it, from now on.
                held = public if version < 2 else public.with_g2_a(g2_decode(body[end:tail]))
            except (struct.error, AbeError):
                raise RenewalRefused("The renewal's contents are malformed.") from None
            opened.append(key.key_id)
            return self.keys.member_key_row(held, key, window=(starts, ends), period_secret=secret)

        start, end = parsed.segment
        try:
            self.tables.open_on_renewal_pad(parsed.pad_id, start, end, open_renewal, self.refusals)
        except Replay:  # used: refused before a pad byte was read
            raise RenewalRefused("That renewal was opened already: refused.") from None
        except OutOfRange:
            raise RenewalRefused("That renewal is outside its renewal pad: refused.") from None
        except UnknownPad:
            raise RenewalRefused("That renewal is for no renewal pad of this device.") from None
        except InvalidPackage:
            raise RenewalRefused() from None
        return next(k for k in self.keys.held() if k.key_id == opened[0])

    def flush_refusals(self, force: bool = True) -> None:
        """Write the refusals counted beyond the log budget (as the pad store does for packages)."""
        self.store.flush_refusals(self.refusals, force)

    def _publics(self) -> list:
        from device.abe.encoding import decode_public_key

        return [decode_public_key(public) for public in self.tables.public_keys()]


def end_text(period: Period) -> str:
    return f"period {period.number}, {when(period.starts)} to {when(period.ends)}"


def renewal_length(all_attributes: tuple[str, ...], room_secrets: int) -> int:
    """The body length of a renewal carrying a key of ``all_attributes`` (its period's included) and
    ``room_secrets`` bytes of room secrets."""
    return BODY.size + MemberKey.encoded_length(all_attributes) + G2_BYTES + room_secrets + 2


class Renewed(list[Renewal]):
    """The renewals made, and ``failed``: each member whose renewal failed, and why (the others were renewed)."""

    def __init__(self, renewals: list[Renewal] | None = None, failed: list[str] | None = None) -> None:
        super().__init__(renewals or [])
        self.failed = failed or []


@dataclass(frozen=True)
class RenewPlan:
    """What a renewal will do, shown to the owner before anything is written."""

    period: Period
    new_period: bool
    early: bool
    members: list[tuple[bytes, str]]
    left: list[str]
    #: The period issued ahead that ending early withdraws (its keys, the revoked members' too, open nothing of
    #: a room that moved on), or None.
    withdraws: Period | None = None
    #: Members that hold no key of the running period (left out of an early end, their renewal failed): they get
    #: the running period's key (``running``), so their devices take the early end (a later period that begins
    #: no later than the one they hold ahead withdraws it there), instead of the period after it.
    catch_up: list[tuple[bytes, str]] = field(default_factory=list)
    running: Period | None = None
    #: Ending early: the running period, when it began less than RECENT_S ago (maybe by the early end this one
    #: repeats, whose packages did not reach the relay: ``--resend`` delivers them). Asked again (``again``).
    recent: Period | None = None
    #: What it was planned from (re-planned at approval: :func:`renew`).
    who: str | None = None
    length: float | None = None
    #: Members whose keys satisfy more rooms than a key carries secrets of (MAX_ROOM_SECRETS; only an authority
    #: from before the cap at create): "name: n rooms", renewed without the rest (AbeKeys.rooms_cut).
    cut: list[str] = field(default_factory=list)
    #: Rooms naming this authority with no record of their creation (AbeKeys.unrecorded_rooms): "name (policy)".
    unrecorded: list[str] = field(default_factory=list)

    def shape(self) -> tuple:
        """What the owner approved, as far as periods go: re-planned at approval, it must be the same."""
        number = (lambda p: p.number if p is not None else None)  # noqa: E731
        return (self.period.number, self.new_period, self.early, number(self.withdraws), number(self.running),
                sorted(d for d, _ in self.catch_up))

    def question(self) -> str:
        who = ", ".join(name for _, name in self.members) or "nobody"
        lines = [f"Renew the keys of {who} for {end_text(self.period)}?"] if self.members or self.early else []
        if self.catch_up and self.running is not None:
            lines.append(f"Give {', '.join(name for _, name in self.catch_up)}, who hold no key of the running "
                         f"period, its key: {end_text(self.running)}?")
        if self.early:
            lines.append("The running period ends NOW for everyone: members not renewed (revoked) read no room's "
                         "new epochs from the moment the others' devices move on.")
        if self.recent is not None:
            lines.append(f"Period {self.recent.number} began only at {when(self.recent.starts)}: if that was an "
                         "early end whose renewals did not arrive, `otc abe renew --resend` delivers them, and this "
                         f"ends period {self.recent.number} too.")
        if self.withdraws is not None:
            lines.append(f"Period {self.withdraws.number}, whose keys were issued ahead, is WITHDRAWN: it never "
                         f"begins, and its keys (a revoked member's too) open no room's epochs after the move. "
                         f"Period {self.period.number} replaces it from now.")
        if self.left:
            lines.append("Not renewed: " + "; ".join(self.left))
        if self.cut:
            lines.append("Renewed without some rooms' secrets (more rooms than a key carries): " + "; ".join(self.cut))
        if self.unrecorded:
            lines.append(unrecorded_text(self.unrecorded))
        lines.append("Each renewal is sent on the renewal pad the grant left with that member.")
        return "\n\n".join(lines)


#: A period that began less than this long ago is not ended early again without being asked (check_again).
RECENT_S = 3600.0


def plan_renewal(keys: AbeKeys, who: str | None = None, end_period: bool = False, length: float | None = None,
                 now: float | None = None) -> RenewPlan:
    period, new = keys.preview_next_period(length, now, early=end_period)
    members, left = RenewalPads(keys).plan(who, period.number)
    ahead = keys.issued_ahead(now) if end_period and new else None
    running = None if end_period else keys.current_period(now)
    catch_up: list[tuple[bytes, str]] = []
    if running is not None and running.number != period.number:
        # A member with no key of the running period (an early end that failed for it, or was planned before it
        # was renewed ahead) gets that period, not the next: issued the period after it, its device would not
        # see the period it holds ahead as withdrawn, and would follow a revoked member into it (an outside
        # review, finding 2).
        have = {i.member_device_id for i in keys.issued() if i.period == running.number}
        catch_up = [m for m in members if m[0] not in have]
        members = [m for m in members if m[0] in have]
    current = keys.current_period(now) if end_period else None
    now = time.time() if now is None else now
    # A period after another (the first one began at a grant) that began a moment ago: maybe by an early end.
    recent = current if current is not None and current.number > 1 and now - current.starts < RECENT_S else None
    cut_of = keys.cut_counter()
    cut = [f"{name}: {plural(n, 'room')} cut" for device_id, name in members + catch_up
           if (n := cut_of(renewal_for(keys, device_id).attributes))]
    unrecorded = [f"{room.get('name')} ({room.get('policy')})" for room in keys.unrecorded_rooms()]
    return RenewPlan(period, new and (end_period or bool(members)), end_period, members, left, ahead, catch_up,
                     running, recent, who, length, cut, unrecorded)


def unrecorded_text(rooms: list[str]) -> str:
    """What the owner is told of rooms naming this authority that it has no record of creating."""
    return (f"This authority has no record of creating {plural(len(rooms), 'room')} it keeps: {'; '.join(rooms)}. "
            "Keys carry no secret for them, so members cannot contribute in their tagged periods. If this "
            "authority created one, `otc room add --own INVITE` records it (confirmed on the device, its policy "
            "shown): keys issued after that carry its secret.")


class PlanChanged(AbeError):
    """The authority's periods changed between the plan the owner was shown and its approval."""

    code = "abe-plan-changed"


#: One renewal at a time on this device: re-planning at approval and carrying it out are not split by another
#: (a thread of this process; another process on the same home is kept out by the home's RENEW_LOCK flock).
_RENEWING = threading.Lock()
#: The home-level lock (run/abe-renew.flock) held around the re-plan and the carry-out: `otc abe renew --home`
#: beside the device server's approved abe_renew cannot both act on a stale plan (an outside review, abe2 D1).
RENEW_LOCK = "abe-renew"


class EndedRecently(AbeError):
    """Ending early again a period that began a moment ago (an early end retried): asked again, or refused."""

    code = "abe-ended-recently"


def check_again(plan: RenewPlan, again: bool) -> None:
    """Refuse ending early a period that began less than RECENT_S ago unless ``again`` says so: a retry of an
    early end whose packages did not reach the relay would otherwise end another period, silently (an outside
    review). ``otc abe renew --resend`` delivers the kept packages instead."""
    if plan.recent is not None and not again:
        raise EndedRecently(
            f"Period {plan.recent.number} began only at {when(plan.recent.starts)} (an early end just made?): "
            "its renewals are kept; `otc abe renew --resend` delivers them. To end it early too, add --again.")


def renew(keys: AbeKeys, plan: RenewPlan, random_bytes: Callable[[int], bytes], now: float | None = None
          ) -> Renewed:
    """Carry out ``plan`` (once its owner approved it): the period made if need be, each member's renewal sealed
    on its pad (a member that already has a key of that period is skipped). A member whose renewal fails (its
    pad used up since the plan) is reported in ``failed`` and the others are renewed: before (an outside review)
    the first failure stopped the loop after the early end was made, and later members got nothing."""
    with _RENEWING, keys.store.home_lock(RENEW_LOCK):
        # Re-planned now, under the lock: the owner approved what the screen said, planned before the request
        # waited its turn on the screen. Another renewal approved meanwhile (one issuing a period ahead), or a
        # period begun meanwhile (the one shown as withdrawn), changes what this one would do: refused (an outside
        # review, finding 5: an early end queued behind a renewal ahead did no early end at all; one approved
        # after the withdrawn period's start said WITHDRAWN while that period had run).
        fresh = plan_renewal(keys, plan.who, plan.early, plan.length, now)
        if fresh.shape() != plan.shape():
            raise PlanChanged("The authority's periods changed since this renewal was planned (another renewal, "
                              "or a period began, while it waited for approval): nothing was renewed. Ask again.")
        # The members approved (one revoked or whose pad was used up since is reported in `failed`), the periods
        # as they are now (an early end starts at the approval).
        return _carry_out(keys, replace(fresh, members=plan.members), random_bytes, now)


def _carry_out(keys: AbeKeys, plan: RenewPlan, random_bytes: Callable[[int], bytes], now: float | None) -> Renewed:
    period: Period | None = None
    if plan.members or plan.early:  # (only catching members up on the running period makes no period)
        known = {p.number: p for p in keys.periods()}
        if plan.period.number not in known and plan.period.number != max(known, default=0) + 1:
            raise AbeError("The authority's periods changed since the renewal was planned: nothing was renewed.")
        if plan.early and plan.period.number in known:  # an early end makes its period: never one made already
            raise PlanChanged("The authority's periods changed since the renewal was planned: nothing was renewed.")
        period = known.get(plan.period.number) or keys.next_period(plan.period.ends - plan.period.starts, now,
                                                                   early=plan.early)
        if period.number != plan.period.number:
            raise AbeError("The authority's periods changed since the renewal was planned: nothing was renewed.")
    pads = RenewalPads(keys)
    out = Renewed()
    for targets, issued_for in ((plan.catch_up, plan.running), (plan.members, period)):
        for device_id, name in targets:
            assert issued_for is not None
            try:
                renewal = pads.renew(device_id, issued_for, random_bytes)
            except AbeError as exc:  # NoRenewalPad, Revoked: nothing of it was written
                out.failed.append(f"{name}: {exc}")
                continue
            if renewal is not None:
                out.append(renewal)
    return out


__all__ = ["PAD_BYTES", "NoRenewalPad", "Renewal", "RenewalPads", "RenewalRefused", "Renewed", "UnknownMember",
           "make_pad"]
