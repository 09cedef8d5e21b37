"""Deep JSON (issue 19): deeply nested JSON gets a 4xx JSON error from both servers, never a 500.

The attacker builds the brackets itself and posts them with plain requests.
"""

from __future__ import annotations

import pytest
import requests

from onetimechat import boundedjson
from relay.app import create_app
from relay.config import RelayConfig
from relay.server import RelayServer

DEPTHS = [33, 1_000, 200_000]


def nested(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * depth + close * depth).encode()


def nested_objects(depth: int) -> bytes:
    return ('{"a":' * depth + "1" + "}" * depth).encode()


@pytest.fixture
def relay_url(tmp_path):
    server = RelayServer(create_app(RelayConfig(db=f"sqlite:///{tmp_path / 'relay.db'}")), "127.0.0.1", 0,
                         threads=8).start()
    yield server.url
    server.close()


def assert_json_4xx(response: requests.Response) -> None:
    assert 400 <= response.status_code < 500, response.status_code
    assert isinstance(response.json()["error"], str)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("path", ["/v1/pair/begin", "/v1/pair/exchange", "/v1/pair/confirm"])
def test_device_answers_deep_json_with_a_4xx(rpc_device, path, depth):
    for body in (nested(depth), nested_objects(depth)):
        response = requests.post(rpc_device.url + path, data=body, timeout=30,
                                 headers={"Content-Type": "application/json"})
        assert_json_4xx(response)
    assert requests.get(rpc_device.url + "/v1/health", timeout=10).status_code == 200


def test_a_paired_laptops_deep_json_inside_a_sealed_call_is_refused_with_a_4xx(rpc_device):
    from onetimechat import rpc

    client = rpc_device.pair_client()
    counter = client.state.next_counter(client.url)
    # The seal is made here with the raw AEAD, so the payload can be any bytes.
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    header = rpc.REQUEST_HEADER.pack(rpc.REQUEST_MAGIC, rpc.VERSION, client.creds.client_id, counter)
    sealed = ChaCha20Poly1305(client.keys.request).encrypt(counter.to_bytes(12, "big"), nested(200_000), header)
    response = requests.post(rpc_device.url + "/v1/call", data=header + sealed, timeout=30,
                             headers={"Content-Type": "application/octet-stream"})
    assert_json_4xx(response)
    assert client.ping()["client"] == "laptop"


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("path", ["/v1/send", "/v1/receive", "/v1/ack", "/send"])
def test_relay_answers_deep_json_with_a_4xx(relay_url, path, depth):
    for body in (nested(depth), nested_objects(depth)):
        response = requests.post(relay_url + path, data=body, timeout=30,
                                 headers={"Content-Type": "application/json"})
        assert_json_4xx(response)
    assert requests.get(relay_url + "/check", timeout=10).json() == {"status": "ok"}


def test_the_limit_itself():
    assert boundedjson.loads(nested(boundedjson.MAX_DEPTH)) is not None
    with pytest.raises(boundedjson.TooDeep):
        boundedjson.loads(nested(boundedjson.MAX_DEPTH + 1))
    with pytest.raises(ValueError):
        boundedjson.loads(nested(500_000))
    assert boundedjson.loads(b"12") == 12 and boundedjson.loads('"x"') == "x"
