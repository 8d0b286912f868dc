"""Discovery datagrams: JSON only, malformed ones refused and never unpickled."""

from __future__ import annotations

import json
import logging
import os
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispy.config import PROTOCOL_VERSION
from dispy.wire import discovery
from dispy.wire.discovery import MAGIC, MAX_DATAGRAM, DiscoveryProtocol, decode, encode

pytestmark = pytest.mark.timeout(30)

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=16)
messages = st.fixed_dictionaries(
    {"op": st.text(min_size=1, max_size=12)},
    optional={
        "ip_addr": st.text(max_size=15),
        "port": st.integers(0, 65535),
        "cpus": st.integers(0, 256),
        "extra": st.lists(scalars, max_size=5),
        "info": st.dictionaries(st.text(max_size=6), scalars, max_size=4),
    },
)


class Touch:
    """Unpickling this creates a file: proof that somebody called pickle.loads."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@SETTINGS
@given(messages)
def test_round_trip(msg):
    data = encode(msg)
    assert data.startswith(MAGIC)
    got = decode(data)
    assert got == {"proto": PROTOCOL_VERSION, **msg}


def test_message_may_set_its_own_proto():
    assert decode(encode({"op": "node", "proto": 7}))["proto"] == 7


def test_encode_refuses_oversized_message():
    with pytest.raises(ValueError, match="too large"):
        encode({"op": "node", "pad": "x" * MAX_DATAGRAM})


@SETTINGS
@given(st.binary(max_size=200))
def test_garbage_is_value_error(data):
    try:
        msg = decode(data)
    except ValueError:
        return
    # Only a well-formed dispy message can get through.
    assert data.startswith(MAGIC)
    assert isinstance(msg, dict) and isinstance(msg["op"], str)


@SETTINGS
@given(st.binary(max_size=200))
def test_garbage_after_magic_is_value_error(data):
    try:
        msg = decode(MAGIC + data)
    except ValueError:
        return
    assert isinstance(msg, dict) and isinstance(msg["op"], str)


@pytest.mark.parametrize("data", [
    b"",
    b"DISPY",
    b"DISPY\x02" + json.dumps({"op": "node"}).encode(),
    b"dispy\x01" + json.dumps({"op": "node"}).encode(),
    json.dumps({"op": "node"}).encode(),
])
def test_wrong_magic(data):
    with pytest.raises(ValueError, match="not a dispy datagram"):
        decode(data)


def test_oversized_datagram():
    body = json.dumps({"op": "node", "pad": "x" * MAX_DATAGRAM}).encode()
    with pytest.raises(ValueError, match="too large"):
        decode(MAGIC + body)
    ok = MAGIC + json.dumps({"op": "n", "p": ""}).encode()
    fill = MAX_DATAGRAM - len(ok)
    exact = MAGIC + json.dumps({"op": "n", "p": "x" * fill}).encode()
    assert len(exact) == MAX_DATAGRAM
    assert decode(exact)["op"] == "n"


@pytest.mark.parametrize("body", [
    {}, {"proto": 1}, {"op": 5}, {"op": None}, {"op": ["node"]}, [1, 2], "node", 3, None,
])
def test_json_that_is_not_a_message(body):
    with pytest.raises(ValueError, match="not a dispy message"):
        decode(MAGIC + json.dumps(body).encode())


@pytest.mark.parametrize("body", [b"{", b"\xff\xfe", b"", b"NaNx", b"{'op': 'x'}"])
def test_body_not_json(body):
    with pytest.raises(ValueError):
        decode(MAGIC + body)


@pytest.mark.parametrize("proto", [0, 2, 4, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("prefix", [b"", MAGIC])
def test_pickle_is_never_unpickled(tmp_path, proto, prefix):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Touch(marker), protocol=proto)
    # Sanity: the payload really would create the file if unpickled.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Touch(probe))).close()
    assert probe.exists()
    with pytest.raises(ValueError):
        decode(prefix + payload)
    assert not marker.exists()


@pytest.mark.parametrize("prefix", [b"", MAGIC])
def test_os_system_pickle_refused(prefix):
    with pytest.raises(ValueError):
        decode(prefix + pickle.dumps((os.system, ("true",))))
    with pytest.raises(ValueError):
        decode(prefix + pickle.dumps(os.system))


def test_decode_does_not_use_pickle(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)
    assert decode(encode({"op": "x"}))["op"] == "x"
    with pytest.raises(ValueError):
        decode(MAGIC + pickle.dumps({"op": "x"}))


def make_protocol():
    calls = []
    proto = DiscoveryProtocol(lambda msg, addr: calls.append((msg, addr)), "test-node")
    return proto, calls


@pytest.mark.parametrize("data", [b"junk", MAGIC + b"{", MAGIC + b"[]", b"x" * (MAX_DATAGRAM + 1),
                                  MAGIC + pickle.dumps({"op": "x"})])
def test_protocol_drops_garbage_with_warning(caplog, data):
    proto, calls = make_protocol()
    with caplog.at_level(logging.WARNING, logger="dispy.discovery"):
        proto.datagram_received(data, ("10.1.2.3", 9))
    assert calls == []
    records = [r for r in caplog.records if r.name == "dispy.discovery"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert "10.1.2.3" in records[0].getMessage()
    assert "test-node" in records[0].getMessage()


def test_protocol_passes_good_datagram():
    proto, calls = make_protocol()
    proto.datagram_received(encode({"op": "node", "cpus": 2}), ("10.1.2.3", 9))
    assert calls == [({"proto": PROTOCOL_VERSION, "op": "node", "cpus": 2}, ("10.1.2.3", 9))]


def test_protocol_survives_handler_error(caplog):
    def handler(msg, addr):
        raise RuntimeError("handler broke")

    proto = DiscoveryProtocol(handler, "n")
    with caplog.at_level(logging.ERROR, logger="dispy.discovery"):
        proto.datagram_received(encode({"op": "node"}), ("10.0.0.1", 1))
    assert any("failed to handle" in r.getMessage() for r in caplog.records)


def test_send_without_transport_is_noop():
    proto, _ = make_protocol()
    proto.send({"op": "x"}, ("127.0.0.1", 9))  # no transport yet: nothing happens


def test_send_uses_transport():
    sent = []

    class FakeTransport:
        def sendto(self, data, addr):
            sent.append((data, addr))

    proto, _ = make_protocol()
    proto.connection_made(FakeTransport())
    proto.send({"op": "discover"}, ("1.2.3.4", 5))
    assert len(sent) == 1
    assert decode(sent[0][0])["op"] == "discover"
    assert sent[0][1] == ("1.2.3.4", 5)
    assert discovery.log.name == "dispy.discovery"


@pytest.mark.parametrize("body", [b"[" * 8000, b'{"a":' * 1600])
def test_deeply_nested_json_is_value_error(body):
    data = MAGIC + body
    assert len(data) <= MAX_DATAGRAM
    with pytest.raises(ValueError):
        decode(data)


def test_protocol_drops_deeply_nested_json():
    proto, calls = make_protocol()
    proto.datagram_received(MAGIC + b"[" * 8000, ("10.1.2.3", 9))
    assert calls == []
