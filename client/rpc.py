"""The client side of the device RPC: pairing, and sealed calls.

    creds = pair("http://192.168.7.1:8470", code="1234-5678", name="laptop")
    device = DeviceClient("http://192.168.7.1:8470")
    b64 = device.package("bob", "hello")["package"]
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from typing import Any

import requests

from client.errors import (
    ClientError,
    DeviceInternalError,
    DeviceRefused,
    DeviceUnreachable,
    ForgedResponse,
    PairingError,
    RemoteError,
)
from client.relay import Unbounded, read_bounded
from client.state import ClientState, Credentials
from onetimechat import boundedjson, rpc
from onetimechat.crypto import equal
from onetimechat.text import from_server

DEFAULT_TIMEOUT_S = 300.0  # a package call waits for the owner's decision
CONNECT_TIMEOUT_S = 5.0
# The largest answer a device gives (a package of the largest message, sealed, with room to spare); an answer
# announced or running longer is not read on (a hostile cable must not fill the laptop's memory).
MAX_ANSWER_BYTES = 64 << 20
MAX_HEALTH_BYTES = 4096


class DeviceClient:
    """Sealed calls to one paired device."""

    def __init__(self, url: str | None, state: ClientState | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                 session: requests.Session | None = None) -> None:
        """``url``: the device's URL (any spelling), its name, or None for the remembered one."""
        self.state = state or ClientState()
        self.url = self.state.resolve_device(url)
        self.creds = self.state.load(self.url)
        self.keys = self.creds.keys
        self.timeout = timeout
        self.session = session or requests.Session()
        self._lock = threading.Lock()

    def call(self, method: str, **params: Any) -> Any:
        """Run ``method`` on the device; raise RemoteError with the device's code if it refuses."""
        for attempt in range(2):
            counter = self.state.next_counter(self.url)
            body = rpc.seal_request(self.keys, self.creds.client_id, counter, {"method": method, "params": params})
            # The device never compresses: an answer in another encoding (a decompression bomb from the cable)
            # is refused, not inflated.
            response = self._post("/v1/call", data=body, stream=True,
                                  headers={"Content-Type": "application/octet-stream", "Accept-Encoding": "identity"})
            try:  # in one read, not requests' 10 KiB chunks (issue 21), and never more than an answer can be
                response._content = _read_bounded(response, MAX_ANSWER_BYTES)
            except ForgedResponse:
                raise
            except Exception:  # noqa: BLE001 - urllib3 and socket errors alike: the device went away mid-answer
                raise DeviceUnreachable(f"The device at {self.url} stopped answering mid-call.") from None
            finally:
                response.close()
            if response.status_code == 401:
                # Another call from this laptop may have overtaken this one (counters must
                # rise); a refused call did nothing, so one retry with a new counter is safe.
                if attempt == 0:
                    continue
                self._check_version()
                raise DeviceRefused()
            if response.status_code == 400 and _error_code(response) == "protocol-version":
                # A device newer than this laptop's otc, says an answer no one authenticated: the laptop says it
                # in its own words (never the answer's advice) and changes nothing.
                raise ClientError(f"The device at {self.url} refused this laptop's protocol version {rpc.VERSION} "
                                  "(an unauthenticated answer): if the device was upgraded, upgrade otc here too.")
            if response.status_code == 400:  # a call the device took as malformed: its code, as for a refusal
                raise RemoteError("bad-request", _error_text(response))
            if response.status_code == 500 and _error_code(response) == "internal":
                raise DeviceInternalError(f"The device failed on this call: {_error_text(response)}")
            if response.status_code != 200:
                raise ClientError(f"The device answered {response.status_code}: {_error_text(response)}")
            try:
                answer = rpc.open_response(self.keys, counter, response.content)
            except rpc.Unauthorized:
                raise ForgedResponse() from None
            if answer.get("ok"):
                return answer.get("result")
            raise RemoteError(from_server(answer.get("error", "error"), 60),
                              from_server(answer.get("message", "The device refused.")))
        raise AssertionError("unreachable")

    def _check_version(self) -> None:
        """After a refused call: a device of another protocol version refuses every call as unauthorized (an
        old device does not know version 2), so ask its health which version it speaks and say so."""
        try:
            response = self.session.get(self.url + "/v1/health", timeout=(CONNECT_TIMEOUT_S, 10), stream=True,
                                        headers={"Accept-Encoding": "identity"})
            try:
                theirs = boundedjson.loads(_read_bounded(response, MAX_HEALTH_BYTES)).get("protocol")
            finally:
                response.close()
        except (requests.RequestException, ValueError, AttributeError, ForgedResponse, OSError):
            return
        if isinstance(theirs, int) and theirs != rpc.VERSION:
            raise ClientError(rpc.version_mismatch(theirs, "laptop"))

    def _post(self, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self.session.post(self.url + path, timeout=(CONNECT_TIMEOUT_S, self.timeout), **kwargs)
        except requests.RequestException:
            raise DeviceUnreachable(f"The device at {self.url} does not answer; is it plugged in and serving?") \
                from None

    # -- the methods ------------------------------------------------------------------

    def ping(self) -> dict:
        return self.call("ping")

    def status(self, events: int = 10) -> dict:
        return self.call("status", events=events)

    def contacts(self) -> list[dict]:
        return self.call("contacts")

    def package(self, contact: str, text: str) -> dict:
        """The device's answer, its ``package`` in base64 (as the relay carries it; it travels raw)."""
        answer = self.call("package", contact=contact, text=text)
        if isinstance(answer, dict) and isinstance(answer.get("package"), bytes):
            answer["package"] = base64.b64encode(answer["package"]).decode("ascii")
        return answer

    def unpackage(self, package_b64: str, receipt: bool = False) -> dict:
        return self.call("unpackage", package=package_b64, receipt=receipt)

    def events(self, limit: int = 50) -> list[dict]:
        return self.call("events", limit=limit)

    def clients(self) -> list[dict]:
        return self.call("clients")

    def revoke(self, client_id: str) -> dict:
        return self.call("revoke", client_id=client_id)


def _read_bounded(response: requests.Response, limit: int) -> bytes:
    """The answer's body as sent (no content decoding), at most ``limit`` bytes; ForgedResponse otherwise."""
    try:
        return read_bounded(response, limit)
    except Unbounded:
        raise ForgedResponse() from None


def _error_code(response: requests.Response) -> str:
    try:
        data = boundedjson.loads(response.content)
    except ValueError:
        return ""
    return str(data.get("error", "")) if isinstance(data, dict) else ""


def _error_text(response: requests.Response) -> str:
    try:
        data = boundedjson.loads(response.content)
    except ValueError:
        return "no details"
    return from_server(data.get("message") or data.get("error")) if isinstance(data, dict) else "no details"


def pair(url: str, name: str, code: str | None = None, ask_code: Callable[[], str] | None = None,
         state: ClientState | None = None, session: requests.Session | None = None) -> Credentials:
    """Pair this laptop with the device at ``url``; store and return the credentials.

    The device shows a code when pairing begins: pass it as ``code`` if it is
    already known (scripts read ``HOME/pairing-code`` in auto mode), or give
    ``ask_code`` to ask the owner once the device shows it.
    """
    state = state or ClientState()
    url = state.resolve_device(url)  # a device paired before keeps the URL it was paired under
    http = session or requests.Session()

    def post(path: str, payload: dict) -> dict:
        try:
            response = http.post(url + path, json=payload, timeout=(CONNECT_TIMEOUT_S, 60))
        except requests.RequestException:
            raise DeviceUnreachable(f"The device at {url} does not answer; is it plugged in and serving?") from None
        try:
            data = boundedjson.loads(response.content)
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        if response.status_code in (409, 429):  # another pairing in progress; locked after wrong codes
            raise PairingError(from_server(data.get("message", "Pairing is locked; try again later.")))
        if response.status_code in (400, 401):
            raise PairingError(from_server(data.get("message", PairingError.user_text())))
        if response.status_code != 200 or not isinstance(data, dict):
            raise ClientError(f"The device answered {response.status_code} to pairing.")
        return data

    malformed = f"A pairing code is {rpc.CODE_DIGITS} digits, like 1234-5678."
    if code is not None and rpc.normalise_code(code) is None:
        raise PairingError(malformed)  # before the device opens a session for it
    started = post("/v1/pair/begin", {"name": name})
    session_id = str(started.get("session", ""))
    try:
        if code is None:
            if ask_code is None:
                raise PairingError("A pairing code is needed: the device shows it now.")
            code = ask_code()
        digits = rpc.normalise_code(code)
        if digits is None:
            raise PairingError(malformed)
    except BaseException:
        # The owner gave up (Ctrl-C) or typed something that is no code: end the session on the device, so
        # that it does not keep every pairing waiting until its code expires.
        try:
            http.post(url + "/v1/pair/cancel", json={"session": session_id}, timeout=(CONNECT_TIMEOUT_S, 10))
        except requests.RequestException:
            pass
        raise
    from spake2 import SPAKE2_A  # only pairing needs it

    spake = SPAKE2_A(digits.encode(), idA=rpc.SPAKE2_ID_CLIENT, idB=rpc.SPAKE2_ID_DEVICE)
    msg_a = spake.start()
    exchanged = post("/v1/pair/exchange", {"session": session_id, "message": base64.b64encode(msg_a).decode()})
    try:
        msg_b = base64.b64decode(str(exchanged.get("message", "")), validate=True)
        key = spake.finish(msg_b)
    except Exception:  # noqa: BLE001 - spake2 raises several types for a bad message
        raise PairingError() from None
    transcript = rpc.transcript_of(bytes.fromhex(session_id), msg_a, msg_b, name)
    proof = rpc.confirmation(key, b"client", transcript)
    confirmed = post("/v1/pair/confirm", {"session": session_id, "confirm": base64.b64encode(proof).decode()})
    try:
        client_id = bytes.fromhex(str(confirmed["client_id"]))
        device_proof = base64.b64decode(str(confirmed["confirm"]), validate=True)
    except (KeyError, ValueError):
        raise PairingError() from None
    if not equal(device_proof, rpc.confirmation(key, b"device", transcript + client_id)):
        raise PairingError("The device could not prove it holds the same key; do not use this connection.")
    creds = Credentials(url=url, client_id=client_id, key=key, name=name, device_name="")
    state.save(creds)
    device_name = DeviceClient(url, state=state, session=http).ping().get("device", "")
    creds = Credentials(url=url, client_id=client_id, key=key, name=name, device_name=str(device_name))
    state.save(creds)
    chosen = state.config().get("device")
    if not chosen or chosen not in {c.url for c in state.paired()}:
        state.remember(device=url)  # the first device: used when --device is left out
    return creds
