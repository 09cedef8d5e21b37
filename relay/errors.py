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


class BadRequest(RelayError):
    """The request is not well formed."""

    code = "bad-request"


class NotFound(RelayError):
    """No such endpoint."""

    code = "not-found"
    status = 404


class MethodNotAllowed(RelayError):
    """This endpoint does not take that HTTP method."""

    code = "method-not-allowed"
    status = 405


class TooLarge(RelayError):
    """The request or the message is larger than this relay accepts."""

    code = "too-large"
    status = 413


class MailboxFull(RelayError):
    """The mailbox holds as many messages as this relay keeps; try again after its reader has caught up."""

    code = "mailbox-full"
    status = 429
    retry_after = 60


class AddressQuota(RelayError):
    """This address has as many bytes stored on this relay as it may; try again once its messages are read."""

    code = "address-quota"
    status = 429
    retry_after = 60


class TooManyMailboxes(RelayError):
    """This address has made as many new mailboxes today as it may; try again later."""

    code = "address-mailboxes"
    status = 429
    retry_after = 3600


class PresenceQuota(RelayError):
    """This address (or the relay) has as many presence handles online as it may; try again later."""

    code = "presence-quota"
    status = 429
    retry_after = 60


class InsufficientStorage(RelayError):
    """The relay's disk is nearly full; new messages wait until it has room (nothing stored is dropped)."""

    code = "insufficient-storage"
    status = 507
    retry_after = 60


class RateLimited(RelayError):
    """Too many requests from this address; slow down."""

    code = "rate-limited"
    status = 429
    retry_after = 1


class Busy(RelayError):
    """Too many requests are already waiting for messages; try again shortly."""

    code = "busy"
    status = 429
    retry_after = 1


class HandleTaken(RelayError):
    """That handle is online under another token."""

    code = "handle-taken"
    status = 409


class Unavailable(RelayError):
    """The relay's store is unavailable; nothing was stored, try again."""

    code = "unavailable"
    status = 503
    retry_after = 5


class StoreError(RelayError):
    """The relay's store cannot be used."""

    code = "store"
    status = 503


class ConfigError(RelayError):
    """The relay's configuration is not usable."""

    code = "config"
    exit_status = 2
