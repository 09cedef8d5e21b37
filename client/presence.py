"""Presence (opt-in, per contact): telling a contact this laptop is online, and seeing who is.

The relay's presence is a list of handles anyone may read (docs/relay-protocol.md).
A handle here is derived from a mailbox id, which only the two devices and the
relay know: ``otc-`` and 40 hex digits of SHA-256("otc presence v1" || the
mailbox id). A laptop that shares its presence with a contact announces the
handle of its outgoing mailbox to that contact; the contact's laptop looks for
the handle of its incoming mailbox. Other relay users see a random-looking
handle and learn nothing; the relay, which can compute the handle from the
mailbox ids it routes by, learns when this laptop says it is online for that
mailbox (which its long polls already show it) and could fake a presence
(presence is a hint, never proof). Off by default.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable

from client.errors import RelayRefused
from client.mailstore import MailStore
from client.relay import RelayClient

PRESENCE_TTL_S = 120
RENEW_EVERY_S = 60.0
_TOKEN = "presence-token"  # noqa: S105 - the name of the setting that holds it, not a token


def handle_for(mailbox_hex: str) -> str:
    """The presence handle of a mailbox (both ends compute the same)."""
    digest = hashlib.sha256(b"otc presence v1\x00" + bytes.fromhex(mailbox_hex)).hexdigest()
    return "otc-" + digest[:40]


def sharing(store: MailStore) -> set[str]:
    """The contacts this laptop shares its presence with."""
    return {name for name in store.setting("presence", "").split(",") if name}


def share(store: MailStore, contact: str, on: bool) -> set[str]:
    names = sharing(store)
    names = names | {contact} if on else names - {contact}
    store.set_setting("presence", ",".join(sorted(names)))
    return names


def _token(store: MailStore) -> str:
    token = store.setting(_TOKEN, "")
    if not token:
        token = secrets.token_hex(24)
        store.set_setting(_TOKEN, token)
    return token


def announce(relay: RelayClient, store: MailStore, contacts: Iterable[dict]) -> int:
    """Announce this laptop to the contacts it shares with; withdraw from the others. How many announced."""
    token, names, done = _token(store), sharing(store), 0
    for contact in contacts:
        for mailbox in contact.get("mailboxes_out", []):
            if contact.get("name") in names:
                relay.announce(handle_for(str(mailbox)), token, PRESENCE_TTL_S)
                done += 1
            else:
                try:
                    relay.withdraw(handle_for(str(mailbox)), token)
                except RelayRefused:
                    pass  # not announced, or by another laptop of this owner
    return done


def online(relay: RelayClient, contacts: Iterable[dict]) -> list[str]:
    """The contacts whose laptops say they are online now (only those who share with this one)."""
    handles = relay.online()
    return sorted({str(c.get("name")) for c in contacts
                   if any(handle_for(str(m)) in handles for m in c.get("mailboxes_in", []))})
