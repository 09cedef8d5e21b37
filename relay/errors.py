"""Errors of the relay.

Every refusal the relay gives a client is one of these: an HTTP 4xx status and
a JSON body ``{"error": code, "message": text}``. ``docs/relay-protocol.md``
lists the codes. Texts never carry message contents.
"""

from __future__ import annotations

from onetimechat.errors import OTCError


class RelayError(OTCError):
    """The relay refused the request."""

    code = "relay"
    #: The HTTP status the relay answers with.
    status: int = 400
    #: Seconds after which a retry may succeed (sent as Retry-After), if any.
    retry_after: int | None = None

    def fields(self) -> dict[str, str]:
        """Fields the JSON answer carries besides ``error`` and ``message``."""
        return {}

    def __init_subclass__(cls, code: str = "", status: int = 0, retry_after: int | None = None) -> None:
        """Each refusal below names its code, status and Retry-After in its class line."""
        super().__init_subclass__()
        cls.code = code or cls.code
        cls.status = status or cls.status
        cls.retry_after = retry_after if retry_after is not None else cls.retry_after


class BadRequest(RelayError, code="bad-request"):
    """The request is not well formed."""


class NotFound(RelayError, code="not-found", status=404):
    """No such endpoint."""


class MethodNotAllowed(RelayError, code="method-not-allowed", status=405):
    """This endpoint does not take that HTTP method."""


class TooLarge(RelayError, code="too-large", status=413):
    """The request or the message is larger than this relay accepts."""


class UnsupportedMediaType(RelayError, code="unsupported-media-type", status=415):
    """The body is not of the type this endpoint takes."""


class MailboxFull(RelayError, code="mailbox-full", status=429, retry_after=60):
    """The mailbox holds as many messages as this relay keeps; try again after its reader has caught up."""


class AddressQuota(RelayError, code="address-quota", status=429, retry_after=60):
    """This address has as many bytes stored on this relay as it may; try again once its messages are read."""


class TooManyMailboxes(RelayError, code="address-mailboxes", status=429, retry_after=3600):
    """This address has made as many new mailboxes today as it may; try again later."""


class PresenceQuota(RelayError, code="presence-quota", status=429, retry_after=60):
    """This address (or the relay) has as many presence handles online as it may; try again later."""


class InsufficientStorage(RelayError, code="insufficient-storage", status=507, retry_after=60):
    """The relay's disk is nearly full; new messages wait until it has room (nothing stored is dropped)."""


class RateLimited(RelayError, code="rate-limited", status=429, retry_after=1):
    """Too many requests from this address; slow down."""


class Busy(RelayError, code="busy", status=429, retry_after=1):
    """Too many requests are already waiting for messages; try again shortly."""


class HandleTaken(RelayError, code="handle-taken", status=409):
    """That handle is online under another token."""


class StoreChanged(RelayError, code="store-changed", status=409):
    """This relay's store is not the one your cursors were read from (it was replaced): nothing was deleted.
    Read it from the start (cursors 0) and name the store this answer gives."""

    def __init__(self, store: str) -> None:
        super().__init__()
        #: The relay's own store identity, sent in the answer as ``store``.
        self.store = store

    def fields(self) -> dict[str, str]:
        return {"store": self.store}


class Unavailable(RelayError, code="unavailable", status=503, retry_after=5):
    """The relay's store is unavailable; nothing was stored, try again."""


class NotDurable(Unavailable):
    """The store committed but could not sync the commit: whether it is kept is not known. Try again with the
    same idempotency key (a send kept is found as a duplicate); nothing that commit may name is removed."""


class StoreError(RelayError, code="store", status=503):
    """The relay's store cannot be used."""


class ConfigError(RelayError, code="config"):
    """The relay's configuration is not usable."""

    exit_status = 2
