"""The attribute-key tables (schema steps 2 to 8: ``abe_authorities``, ``abe_keys``, ``abe_issued``,
``abe_periods``, ``abe_pads``): their SQL, for :mod:`device.abe.store` and :mod:`device.abe.renewal`.

Those modules decide (what a key is, which grant counts, whom a renewal reaches) and seal the secrets they
keep; these are the statements that keep them in the device store, each operation one commit. A renewal pad's
bytes are handled here too, under the pad store's rules of pad use (device/storage/padstore.py): reserving its
next segment, destroying used bytes and recording the new frontier are one commit with the package or key they
go with (:meth:`AbeTables.seal_on_renewal_pad`, :meth:`AbeTables.open_on_renewal_pad`); a renewal that opens
is checked (range, replay), read, verified, stored and its bytes destroyed in one transaction, and its
refusals, tag failures and forgery alarm are the pad store's (:class:`~device.storage.padstore.RefusalBudget`,
``tag_failures``, ``forgery-alarm``, evidence kept through log rotation).
"""

from __future__ import annotations

import base64
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from device.errors import OutOfRange, Replay, UnknownPad
from device.storage import sent_renewals
from device.storage.padstore import PadStore, RefusalBudget
from onetimechat import package as fmt
from onetimechat.errors import InvalidPackage

#: Settings row of the period secret that came with a member key (sealed as the key is).
PERIOD_SECRET_PREFIX = "abe-period-secret:"  # noqa: S105 - a settings row name


def renewal_holder(authority_name: str) -> str:
    """Whom a member's renewal pad is shared with, as the event log and the forgery alarm name it."""
    return f"attribute authority {authority_name}"


class AbeTables:
    """The attribute-key tables of one device store."""

    def __init__(self, store: PadStore) -> None:
        self.store = store

    # -- authorities ------------------------------------------------------------------------------------------

    def authority_named(self, name: str) -> bool:
        return bool(self.store._read("SELECT 1 FROM abe_authorities WHERE name = ?", (name,)))

    def add_own_authority(self, authority_id: bytes, name: str, public_key: bytes, sealed_master: bytes,
                          fingerprint: str) -> None:
        with self.store._transaction() as conn:
            conn.execute(
                "INSERT INTO abe_authorities (authority_id, name, public_key, master_key, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (authority_id, name, public_key, sealed_master, time.time()),
            )
            self.store._log(conn, "abe-authority", detail=f"attribute authority {fingerprint}")

    def own_authority(self) -> tuple[bytes, bytes] | None:
        """(authority id, sealed master key) of this device's own authority, if it is one."""
        rows = self.store._read("SELECT authority_id, master_key FROM abe_authorities WHERE master_key IS NOT NULL")
        return (bytes(rows[0][0]), bytes(rows[0][1])) if rows else None

    def public_key_named(self, name: str) -> bytes | None:
        rows = self.store._read("SELECT public_key FROM abe_authorities WHERE name = ?", (name,))
        return bytes(rows[0][0]) if rows else None

    def public_key_of(self, authority_id: bytes) -> bytes | None:
        rows = self.store._read("SELECT public_key FROM abe_authorities WHERE authority_id = ?", (authority_id,))
        return bytes(rows[0][0]) if rows else None

    def upgrade_public_key(self, authority_id: bytes, public_key: bytes) -> None:
        """Replace an authority's public key by the same key with g2^a (the caller checked it is the same)."""
        with self.store._transaction() as conn:
            conn.execute("UPDATE abe_authorities SET public_key = ? WHERE authority_id = ?", (public_key, authority_id))
            self.store._log(conn, "abe-authority-g2a", detail=f"authority {authority_id.hex()[:16]}: public key "
                                                              "with g2^a")

    def authorities_like(self, name: str, authority_id: bytes) -> list[tuple[bytes, bytes]]:
        """(authority id, public key) of the authorities named ``name`` or with the id ``authority_id``."""
        rows = self.store._read("SELECT authority_id, public_key FROM abe_authorities WHERE name = ? OR"
                                " authority_id = ?", (name, authority_id))
        return [(bytes(aid), bytes(pk)) for aid, pk in rows]

    def authority_rows(self) -> list[tuple]:
        """(authority id, name, public key, sealed master key or None) of each authority, oldest first."""
        return self.store._read("SELECT authority_id, name, public_key, master_key FROM abe_authorities"
                                " ORDER BY created")

    def public_keys(self) -> list[bytes]:
        return [bytes(r[0]) for r in self.store._read("SELECT public_key FROM abe_authorities")]

    def authority_identity(self, authority_id: bytes) -> bytes | None:
        rows = self.store._read("SELECT device_identity FROM abe_authorities WHERE authority_id = ?",
                                (authority_id,))
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    def bind_authority_identity(self, authority_id: bytes, identity: bytes) -> None:
        with self.store._transaction() as conn:
            conn.execute("UPDATE abe_authorities SET device_identity = ? WHERE authority_id = ?"
                         " AND device_identity IS NULL AND master_key IS NULL", (identity, authority_id))

    # -- member keys --------------------------------------------------------------------------------------------

    def member_key_known(self, key_id: bytes) -> bool:
        return bool(self.store._read("SELECT 1 FROM abe_keys WHERE key_id = ?", (key_id,)))

    def add_member_key(self, *, authority_id: bytes, authority_name: str, public_key: bytes, key_id: bytes,
                       attributes: str, sealed_key: bytes, pending: bool, fingerprint: str, period: int | None,
                       window: tuple[float, float] | None, detail: str,
                       sealed_period_secret: bytes | None = None) -> None:
        """Keep a member key (and its authority, if new; and the period secret sent with it), in one commit."""
        with self.store._transaction() as conn:
            self._insert_member_key(conn, authority_id=authority_id, authority_name=authority_name,
                                    public_key=public_key, key_id=key_id, attributes=attributes,
                                    sealed_key=sealed_key, pending=pending, fingerprint=fingerprint, period=period,
                                    window=window, detail=detail, sealed_period_secret=sealed_period_secret)

    def _insert_member_key(self, conn: sqlite3.Connection, *, authority_id: bytes, authority_name: str,
                           public_key: bytes, key_id: bytes, attributes: str, sealed_key: bytes, pending: bool,
                           fingerprint: str, period: int | None, window: tuple[float, float] | None,
                           detail: str, sealed_period_secret: bytes | None = None) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO abe_authorities (authority_id, name, public_key, master_key, created)"
            " VALUES (?, ?, ?, NULL, ?)",
            (authority_id, authority_name, public_key, time.time()),
        )
        # A public key with g2^a (kind 5, 96 bytes longer) replaces the same key without it, held from before
        # (AbeKeys.check_authority has checked that it is the same key).
        conn.execute("UPDATE abe_authorities SET public_key = ? WHERE authority_id = ? AND master_key IS NULL"
                     " AND length(public_key) < ?", (public_key, authority_id, len(public_key)))
        conn.execute(
            "INSERT INTO abe_keys (key_id, authority_id, attributes, secret, created, confirmed, fingerprint,"
            " period, starts, ends) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key_id, authority_id, attributes, sealed_key, time.time(), int(not pending), fingerprint,
             period, window[0] if window else None, window[1] if window else None),
        )
        if sealed_period_secret is not None:  # with the key, in its commit (docs/rooms.md "Period secrets, per room")
            self.store._set_setting(conn, PERIOD_SECRET_PREFIX + key_id.hex(),
                                    base64.b64encode(sealed_period_secret).decode())
        self.store._log(conn, "abe-key-received", detail=detail)

    def sealed_period_secret(self, key_id: bytes) -> bytes | None:
        """The sealed period secret delivered with the member key ``key_id``, if its authority sent one."""
        rows = self.store._read("SELECT value FROM settings WHERE name = ?", (PERIOD_SECRET_PREFIX + key_id.hex(),))
        return base64.b64decode(rows[0][0]) if rows else None

    def member_key_rows(self, authority_id: bytes | None = None) -> list[tuple[bytes, bytes]]:
        """(key id, sealed key) of the confirmed member keys (of ``authority_id``), oldest first."""
        sql = "SELECT key_id, secret FROM abe_keys WHERE confirmed = 1"
        params: tuple = ()
        if authority_id is not None:
            sql += " AND authority_id = ?"
            params = (authority_id,)
        return [(bytes(kid), bytes(secret)) for kid, secret in self.store._read(sql + " ORDER BY created", params)]

    def held_rows(self) -> list[tuple]:
        """(key id, authority name, authority id, attributes, period, starts, ends) of the confirmed keys."""
        return self.store._read(
            "SELECT k.key_id, a.name, k.authority_id, k.attributes, k.period, k.starts, k.ends FROM abe_keys k"
            " JOIN abe_authorities a ON a.authority_id = k.authority_id WHERE k.confirmed = 1 ORDER BY k.created")

    # -- periods and issuing (the authority) ---------------------------------------------------------------------

    def period_rows(self, authority_id: bytes) -> list[tuple]:
        return self.store._read("SELECT period, starts, ends FROM abe_periods WHERE authority_id = ? ORDER BY period",
                                (authority_id,))

    def add_period(self, authority_id: bytes, number: int, starts: float, ends: float, detail: str,
                   end_at: float | None = None) -> None:
        """Record a period; with ``end_at`` (now: "end the period early") every period of this authority not over
        by then ends then, and one not begun yet (issued ahead) is withdrawn: it starts then too. The keys issued
        for them are recorded so, in the same commit."""
        with self.store._transaction() as conn:
            if end_at is not None:
                for table in ("abe_periods", "abe_issued"):
                    conn.execute(f"UPDATE {table} SET starts = ? WHERE authority_id = ? AND starts > ?",
                                 (end_at, authority_id, end_at))
                    conn.execute(f"UPDATE {table} SET ends = ? WHERE authority_id = ? AND ends > ?",
                                 (end_at, authority_id, end_at))
            conn.execute("INSERT INTO abe_periods (authority_id, period, starts, ends) VALUES (?, ?, ?, ?)",
                         (authority_id, number, starts, ends))
            self.store._log(conn, "abe-period", detail=detail)

    def add_issued(self, **record: Any) -> None:
        """Record a key issued (the keyword arguments of :meth:`_insert_issued`)."""
        with self.store._transaction() as conn:
            self._insert_issued(conn, **record)

    def _insert_issued(self, conn: sqlite3.Connection, *, key_id: bytes, authority_id: bytes, member: str,
                       member_device_id: bytes | None, attributes: str, how: str, pending: bool,
                       fingerprint: str | None, sealed_proof: bytes, period: int, starts: float, ends: float,
                       detail: str) -> None:
        conn.execute(
            "INSERT INTO abe_issued (key_id, authority_id, member, member_device_id, attributes, how, issued,"
            " confirmed, fingerprint, proof_key, period, starts, ends)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key_id, authority_id, member, member_device_id, attributes, how, time.time(),
             int(not pending), fingerprint, sealed_proof, period, starts, ends),
        )
        self.store._log(conn, "abe-key-issued", detail=detail)

    def revoke_issued(self, key_ids: list[bytes], now: float, detail: str) -> None:
        with self.store._transaction() as conn:
            for key_id in key_ids:
                conn.execute("UPDATE abe_issued SET revoked = ? WHERE key_id = ? AND revoked IS NULL",
                             (now, key_id))
            self.store._log(conn, "abe-revoked", detail=detail)

    def issued_rows(self) -> list[tuple]:
        """(key id, member, member device id, attributes, how, issued, period, starts, ends, revoked) of the
        confirmed issued keys, in the order they were issued."""
        return self.store._read("SELECT key_id, member, member_device_id, attributes, how, issued, period, starts,"
                                " ends, revoked FROM abe_issued WHERE confirmed = 1 ORDER BY issued")

    # -- grants both devices hold -------------------------------------------------------------------------------

    def grant_rows(self, peer: bytes, as_authority: bool) -> list[tuple]:
        """(key id, confirmed, fingerprint, attributes) of the grants with ``peer``."""
        if as_authority:
            return self.store._read("SELECT key_id, confirmed, fingerprint, attributes FROM abe_issued"
                                    " WHERE member_device_id = ?", (peer,))
        return self.store._read("SELECT key_id, confirmed, fingerprint, attributes FROM abe_keys"
                                " WHERE authority_id = ?", (peer,))

    def issued_proof_keys(self, member_device_id: bytes) -> list[tuple[bytes, bytes]]:
        """(key id, sealed proof key) of the keys issued to ``member_device_id`` that have one."""
        return [(bytes(kid), bytes(proof)) for kid, proof in self.store._read(
            "SELECT key_id, proof_key FROM abe_issued WHERE member_device_id = ? AND proof_key IS NOT NULL",
            (member_device_id,))]

    def held_key_rows(self, authority_id: bytes) -> list[tuple[bytes, bytes]]:
        """(key id, sealed key) of every key held from ``authority_id`` (confirmed or not)."""
        return [(bytes(kid), bytes(secret)) for kid, secret in self.store._read(
            "SELECT key_id, secret FROM abe_keys WHERE authority_id = ?", (authority_id,))]

    def confirm_grant(self, key_id: bytes, as_authority: bool) -> None:
        table = "abe_issued" if as_authority else "abe_keys"
        with self.store._transaction() as conn:
            if conn.execute(f"UPDATE {table} SET confirmed = 1 WHERE key_id = ? AND confirmed = 0",
                            (key_id,)).rowcount:
                self.store._log(conn, "abe-grant-confirmed", detail=f"key {key_id.hex()[:16]}")
            conn.execute("UPDATE abe_pads SET confirmed = 1 WHERE key_id = ?", (key_id,))  # its renewal pad

    def discard_grant(self, key_id: bytes, as_authority: bool) -> None:
        table = "abe_issued" if as_authority else "abe_keys"
        with self.store._transaction() as conn:
            conn.execute("DELETE FROM abe_pads WHERE key_id = ? AND confirmed = 0", (key_id,))
            if conn.execute(f"DELETE FROM {table} WHERE key_id = ? AND confirmed = 0", (key_id,)).rowcount:
                self.store._log(conn, "abe-grant-discarded",
                                detail=f"key {key_id.hex()[:16]}: the other device does not hold it")

    # -- renewal pads (device/abe/renewal.py) -----------------------------------------------------------------

    def _seal_pad(self, pad: bytes, pad_id: bytes) -> bytes:
        return self.store.secrets.seal(pad, b"abe pad " + pad_id) if self.store.secrets else pad

    def _open_pad(self, stored: bytes, pad_id: bytes) -> bytearray:
        secrets = self.store.secrets
        return bytearray(secrets.open(bytes(stored), b"abe pad " + pad_id) if secrets else bytes(stored))

    def add_renewal_pad(self, pad: bytes, pad_id: bytes, mailbox: bytes, key_id: bytes, authority_id: bytes,
                        peer_device_id: bytes | None, role: str) -> None:
        """Keep a pad made in a grant, pending with that grant; its authentication key is never sent on."""
        with self.store._transaction() as conn:
            conn.execute(
                "INSERT INTO abe_pads (pad_id, key_id, authority_id, peer_device_id, role, mailbox, size, pad, next,"
                " confirmed, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                (pad_id, key_id, authority_id, peer_device_id, role, mailbox, len(pad), self._seal_pad(pad, pad_id),
                 fmt.AUTH_KEY_LEN, time.time()))
            self.store._log(conn, "abe-renewal-pad", pad_id=pad_id,
                            detail=f"renewal pad of {len(pad)} bytes made in a grant ({role})")

    def member_mailboxes(self) -> list[bytes]:
        """The member's renewal mailboxes (confirmed pads), oldest first."""
        return [bytes(r[0]) for r in self.store._read(
            "SELECT mailbox FROM abe_pads WHERE role = 'member' AND confirmed = 1 ORDER BY created")]

    def renewal_pad_rows(self) -> list[tuple]:
        """(pad id, role, size, next, confirmed, peer device id) of each renewal pad, oldest first."""
        return self.store._read("SELECT pad_id, role, size, next, confirmed, peer_device_id FROM abe_pads"
                                " ORDER BY created")

    def members_with_pad(self) -> set[bytes]:
        """The member devices this authority holds a confirmed renewal pad with."""
        return {bytes(r[0]) for r in self.store._read(
            "SELECT peer_device_id FROM abe_pads WHERE role = 'authority' AND confirmed = 1")}

    def pads_to(self, member_device_id: bytes) -> list[bytes]:
        """The authority's confirmed renewal pads with ``member_device_id``, newest first."""
        return [bytes(r[0]) for r in self.store._read(
            "SELECT pad_id FROM abe_pads WHERE role = 'authority' AND confirmed = 1 AND peer_device_id = ?"
            " ORDER BY created DESC", (member_device_id,))]

    def pad_room(self, member_device_id: bytes) -> int:
        """The most pad bytes one renewal to ``member_device_id`` can take: the largest room left on one of the
        authority's confirmed renewal pads with it (0: none, or all used up)."""
        return max((size - next_free for size, next_free in self.store._read(
            "SELECT size, next FROM abe_pads WHERE role = 'authority' AND confirmed = 1 AND peer_device_id = ?",
            (member_device_id,))), default=0)

    def seal_on_renewal_pad(self, pad_id: bytes, length: int, make: Callable[[int, bytes, bytes], bytes],
                            detail: str, keep: Callable[[bytes, bytes], dict] | None = None,
                            issued: dict | None = None) -> tuple[bytes, bytes] | None:
        """Reserve, build, destroy: one commit, before the package leaves. The next segment of the renewal pad
        for a body of ``length`` bytes goes to ``make`` (offset, segment, authentication key) and is destroyed
        with the frontier moved past it; (the package ``make`` returned, the pad's mailbox). None if the pad
        has no room left (nothing changes). ``keep`` (package, mailbox) gives the record of the package kept
        for re-sending (device/storage/sent_renewals.py), written in the same commit; so is ``issued``, the record
        of the key the package carries (the keyword arguments of :meth:`_insert_issued`): a key is recorded issued
        only with the package that carries it, never without (an outside review found an issued record with no
        package after a pad was used up)."""
        with self.store._transaction() as conn:
            size, next_free, stored, mailbox = conn.execute(
                "SELECT size, next, pad, mailbox FROM abe_pads WHERE pad_id = ?", (pad_id,)).fetchone()
            end = next_free + fmt.segment_length(length)
            if end > size:
                return None
            pad = self._open_pad(stored, pad_id)
            package = make(next_free, bytes(pad[next_free:end]), bytes(pad[:fmt.AUTH_KEY_LEN]))
            pad[next_free:end] = bytes(end - next_free)
            conn.execute("UPDATE abe_pads SET pad = ?, next = ? WHERE pad_id = ?",
                         (self._seal_pad(bytes(pad), pad_id), end, pad_id))
            self.store._log(conn, "abe-renewal-sent", pad_id=pad_id, offset=next_free, length=end - next_free,
                            detail=detail)
            if issued is not None:
                self._insert_issued(conn, **issued)
            if keep is not None:
                sent_renewals.keep(self.store, conn, keep(package, bytes(mailbox)))
        return package, bytes(mailbox)

    def member_pad_authority(self, pad_id: bytes) -> bytes | None:
        """The authority of the member's confirmed renewal pad ``pad_id``, if there is one."""
        rows = self.store._read("SELECT authority_id FROM abe_pads WHERE pad_id = ? AND role = 'member' AND"
                                " confirmed = 1", (pad_id,))
        return bytes(rows[0][0]) if rows else None

    def renewal_pad_holders(self) -> dict[bytes, str]:
        """Whom each of the member's renewal pads is shared with (its authority), by pad id: the name its tag
        failures and forgery alarm are shown under."""
        return {bytes(pad_id): renewal_holder(name) for pad_id, name in self.store._read(
            "SELECT p.pad_id, a.name FROM abe_pads p JOIN abe_authorities a ON a.authority_id = p.authority_id"
            " WHERE p.role = 'member'")}

    def open_on_renewal_pad(self, pad_id: bytes, start: int, end: int,
                            open_package: Callable[[bytes, bytes], dict], refusals: RefusalBudget) -> None:
        """Check, read, verify, store, destroy: one commit, as the pad store receives a package (rules 2 to 4,
        6, 7 of device/storage/padstore.py). A renewal on the member's renewal pad ``pad_id`` at ``[start,
        end)`` is refused before a pad byte is read if that is outside the pad (OutOfRange) or starts below
        the pad's frontier (Replay: used); else ``open_package`` (the segment's bytes, the pad's
        authentication key) verifies and opens it and gives the member key to keep (the keyword arguments of
        :meth:`add_member_key`): the key is stored and the pad's bytes up to ``end`` destroyed in the same
        transaction. If its tag fails (InvalidPackage) nothing changes but the pad's count of tag failures:
        the third raises the forgery alarm. Refusals are logged within ``refusals``. UnknownPad if ``pad_id``
        is no confirmed renewal pad of the member's."""
        refusal: Exception | None = None
        with self.store._transaction() as conn:
            row = conn.execute(
                "SELECT p.size, p.next, p.pad, a.name FROM abe_pads p JOIN abe_authorities a"
                " ON a.authority_id = p.authority_id WHERE p.pad_id = ? AND p.role = 'member' AND p.confirmed = 1",
                (pad_id,)).fetchone()
            if row is None:
                raise UnknownPad()
            size, frontier, stored, name = row
            holder = renewal_holder(name)
            fields: dict = {"contact": holder, "pad_id": pad_id, "offset": start, "length": end - start}
            if not fmt.AUTH_KEY_LEN <= start < end <= size:
                refusal = OutOfRange()
                self.store._refusal(conn, refusals, "abe-renewal-out-of-range", **fields)
            elif start < frontier:  # the pad is used below its frontier (and destroyed: all zeros)
                refusal = Replay()
                self.store._refusal(conn, refusals, "abe-renewal-replay", **fields)
            else:
                pad = self._open_pad(stored, pad_id)
                try:
                    key = open_package(bytes(pad[start:end]), bytes(pad[:fmt.AUTH_KEY_LEN]))
                except InvalidPackage as exc:
                    refusal = exc
                    self.store._tag_failed(conn, refusals, pad_id, holder, fields, event="abe-renewal-forged")
                else:
                    self._insert_member_key(conn, **key)
                    pad[frontier:end] = bytes(end - frontier)  # destroyed with the key's arrival, same commit
                    conn.execute("UPDATE abe_pads SET pad = ?, next = ? WHERE pad_id = ?",
                                 (self._seal_pad(bytes(pad), pad_id), end, pad_id))
                    self.store._log(conn, "abe-renewal-opened", contact=holder, pad_id=pad_id, offset=start,
                                    length=end - start, detail=f"renewed key stored, pad used to {end}")
        if refusal is not None:
            self.store.flush_refusals(refusals, force=False)
            raise refusal
