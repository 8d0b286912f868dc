"""Discovery datagrams: JSON only, typed records only, malformed ones refused and never
unpickled."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import os
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispy.config import PROTOCOL_VERSION
from dispy.wire import discovery, discoverymsg
from dispy.wire.discovery import MAGIC, MAX_DATAGRAM, DiscoveryProtocol, decode, encode
from dispy.wire.discoverymsg import (
    Discover,
    DiscoveryError,
    DiscoveryMessage,
    NodeAnnouncement,
    RelayAnnouncement,
)

pytestmark = pytest.mark.timeout(30)

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=16)
node_records = st.builds(
    NodeAnnouncement,
    name=st.none() | st.text(max_size=16),
    port=st.integers(1, 65535),
    ip_addr=st.none() | st.text(max_size=15),
    cpus=st.none() | st.integers(0, 256),
    busy_with=st.none() | st.text(max_size=16),
    avail_info=st.none() | st.dictionaries(st.text(max_size=6), scalars, max_size=4),
    accepting=st.none() | st.booleans(),
)


def raw(obj: dict) -> bytes:
    """A datagram of any JSON object, as a sender of another version (or an attacker)
    may send: what the records cannot make. ``proto`` is ours unless ``obj`` names one."""
    return MAGIC + json.dumps({"proto": PROTOCOL_VERSION, **obj}).encode()


class Touch:
    """Unpickling this creates a file: proof that somebody called pickle.loads."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@SETTINGS
@given(node_records)
def test_round_trip(rec):
    data = encode(rec)
    assert data.startswith(MAGIC)
    assert decode(data) == rec


def test_message_may_set_its_own_proto():
    assert decode(encode(NodeAnnouncement(port=1, proto=7))).proto == 7


def test_encode_refuses_oversized_message():
    with pytest.raises(ValueError, match="too large"):
        encode(NodeAnnouncement(port=1, platform="x" * MAX_DATAGRAM))


@SETTINGS
@given(st.binary(max_size=200))
def test_garbage_is_value_error(data):
    try:
        msg = decode(data)
    except ValueError:
        return
    # Only a well-formed dispy message can get through.
    assert data.startswith(MAGIC)
    assert isinstance(msg, DiscoveryMessage)


@SETTINGS
@given(st.binary(max_size=200))
def test_garbage_after_magic_is_value_error(data):
    try:
        msg = decode(MAGIC + data)
    except ValueError:
        return
    assert isinstance(msg, DiscoveryMessage)


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
    ok = MAGIC + json.dumps({"op": "relay", "port": 1, "p": ""}).encode()
    fill = MAX_DATAGRAM - len(ok)
    exact = MAGIC + json.dumps({"op": "relay", "port": 1, "p": "x" * fill}).encode()
    assert len(exact) == MAX_DATAGRAM
    assert decode(exact) == RelayAnnouncement(port=1, proto=None)


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
    assert decode(encode(RelayAnnouncement(port=1))) == RelayAnnouncement(port=1)
    with pytest.raises(ValueError):
        decode(MAGIC + pickle.dumps({"op": "relay", "port": 1}))


def make_protocol():
    calls = []
    receiver = discovery.records(lambda msg, addr: calls.append((msg, addr)), "test-node")
    return DiscoveryProtocol(receiver, "test-node"), calls


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
    proto.datagram_received(encode(NodeAnnouncement(port=5, cpus=2)), ("10.1.2.3", 9))
    assert calls == [(NodeAnnouncement(port=5, cpus=2), ("10.1.2.3", 9))]
    assert proto.last_size == len(encode(NodeAnnouncement(port=5, cpus=2)))


def test_protocol_survives_handler_error(caplog):
    def handler(msg, addr):
        raise RuntimeError("handler broke")

    proto = DiscoveryProtocol(discovery.records(handler, "n"), "n")
    with caplog.at_level(logging.ERROR, logger="dispy.discovery"):
        proto.datagram_received(encode(NodeAnnouncement(port=1)), ("10.0.0.1", 1))
    assert any("failed to handle" in r.getMessage() for r in caplog.records)


def test_send_without_transport_is_noop():
    proto, _ = make_protocol()
    proto.send(RelayAnnouncement(port=1), ("127.0.0.1", 9))  # no transport: nothing happens


def test_send_uses_transport():
    sent = []

    class FakeTransport:
        def sendto(self, data, addr):
            sent.append((data, addr))

    proto, _ = make_protocol()
    proto.connection_made(FakeTransport())
    proto.send(discovery.discover(5, "c"), ("1.2.3.4", 5))
    assert len(sent) == 1
    assert isinstance(decode(sent[0][0]), Discover)
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


# ---- typed records (wire/discoverymsg.py) --------------------------------------------------

NODE_INFO = {"name": "host-1", "version": "5.0", "port": 51348, "node_id": "a" * 32,
             "ip_addr": "10.0.0.5", "cpus": 4, "busy": 1, "busy_with": None,
             "platform": "Linux", "avail_info": {"cpu": 12.5}, "accepting": True}

RECORDS = [
    discovery.discover(51347, "client-1"),
    discovery.discover(51347, "c" * 32, b"k" * 32, now=1000.0, announce_port=0,
                       ext_ip_addr="203.0.113.9"),
    NodeAnnouncement.of(NODE_INFO),
    NodeAnnouncement.of({**NODE_INFO, "busy_with": "client at 10.0.0.9", "ip_addr": None}),
    RelayAnnouncement(name="relay-host", port=51348),
    RelayAnnouncement(port=1),
]


@pytest.mark.parametrize("record", RECORDS)
def test_record_round_trip(record):
    assert discovery.decode(discovery.encode(record)) == record


def test_records_travel_as_the_dicts_did():
    """proto and op first, every field of the node's info (nulls too), lean reply lean."""
    full = NodeAnnouncement.of({**NODE_INFO, "extra": "not a field"})
    assert json.loads(encode(full)[len(MAGIC):]) == {
        "proto": PROTOCOL_VERSION, "op": "node", **NODE_INFO}
    assert list(full.as_json())[:2] == ["proto", "op"]
    lean = json.loads(encode(full.lean())[len(MAGIC):])
    assert lean == {"proto": PROTOCOL_VERSION, "op": "node", "version": "5.0",
                    "port": 51348, "node_id": "a" * 32, "ip_addr": "10.0.0.5"}
    busy = NodeAnnouncement.of({**NODE_INFO, "busy_with": "x" * 500, "ip_addr": None}).lean()
    assert busy.as_json()["busy_with"] == "x" * 200 and busy.as_json()["ip_addr"] is None
    assert discovery.decode(encode(busy)).as_json() == busy.as_json()
    assert encode(RelayAnnouncement(name="r", port=5)) == \
        raw({"op": "relay", "name": "r", "port": 5})


def test_discover_travels_as_before():
    """The fields in their order, the signature over the same text, padded to size."""
    key = b"k" * 32
    data = encode(discovery.discover(51347, "client-1", key, now=5.0, announce_port=0))
    assert len(data) == discovery.DISCOVER_SIZE
    obj = json.loads(data[len(MAGIC):])
    assert list(obj) == ["proto", "op", "reply_port", "client_id", "announce_port", "ts",
                         "auth", "pad"]
    mac = hmac.new(key, b"discover|client-1|51347|5|0|None", hashlib.sha256).hexdigest()
    assert obj["auth"] == mac and obj["ts"] == 5 and set(obj["pad"]) == {"-"}


def test_decoded_record_keeps_the_senders_proto():
    rec = discovery.decode(raw({"op": "node", "port": 1, "proto": 9}))
    assert isinstance(rec, NodeAnnouncement) and rec.proto == 9
    bare = discoverymsg.parse({"op": "node", "port": 1})
    assert bare.proto is None  # not taken for ours


def test_unknown_fields_are_ignored():
    rec = discovery.decode(raw({"op": "relay", "port": 7, "later": [1, 2]}))
    assert rec == RelayAnnouncement(port=7)


@pytest.mark.parametrize("msg, reason", [
    ({"op": "discover", "client_id": "c"}, "without 'reply_port'"),
    ({"op": "discover", "reply_port": 5}, "without 'client_id'"),
    ({"op": "discover", "reply_port": 0, "client_id": "c"}, "out of range"),
    ({"op": "discover", "reply_port": 65536, "client_id": "c"}, "out of range"),
    ({"op": "discover", "reply_port": "5", "client_id": "c"}, "not an integer"),
    ({"op": "discover", "reply_port": True, "client_id": "c"}, "not an integer"),
    ({"op": "discover", "reply_port": 5.0, "client_id": "c"}, "not an integer"),
    ({"op": "discover", "reply_port": 5, "client_id": "../etc"}, "not a valid id"),
    ({"op": "discover", "reply_port": 5, "client_id": "x" * 129}, "not a valid id"),
    ({"op": "discover", "reply_port": 5, "client_id": 7}, "not a valid id"),
    ({"op": "discover", "reply_port": 5, "client_id": "c", "announce_port": -1},
     "out of range"),
    ({"op": "discover", "reply_port": 5, "client_id": "c", "ts": "now"}, "not an integer"),
    ({"op": "discover", "reply_port": 5, "client_id": "c", "ext_ip_addr": [1]},
     "not a string"),
    ({"op": "node"}, "without 'port'"),
    ({"op": "node", "port": 1, "ip_addr": 10}, "not a string"),
    ({"op": "node", "port": 1, "cpus": -1}, "out of range"),
    ({"op": "node", "port": 1, "node_id": "a b"}, "not a valid id"),
    ({"op": "node", "port": 1, "accepting": 1}, "not true/false"),
    ({"op": "node", "port": 1, "avail_info": []}, "not an object"),
    ({"op": "node", "port": 1, "proto": "1"}, "not an integer"),
    ({"op": "relay", "name": "r"}, "without 'port'"),
    ({"op": "relay", "port": 1, "name": 5}, "not a string"),
])
def test_malformed_records_are_refused(msg, reason):
    with pytest.raises(DiscoveryError, match=reason):
        discovery.decode(raw(msg))


def test_unknown_op_is_its_own_error():
    with pytest.raises(discoverymsg.UnknownMessage):
        discovery.decode(raw({"op": "ping"}))


json_values = st.recursive(
    scalars | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8)
record_like = st.fixed_dictionaries(
    {"op": st.sampled_from(["discover", "node", "relay", "other"])},
    optional={name: json_values | st.integers(-5, 70000) | st.just("c")
              for name in ("proto", "reply_port", "client_id", "announce_port", "ts", "auth",
                           "ext_ip_addr", "port", "ip_addr", "node_id", "cpus", "busy",
                           "busy_with", "avail_info", "accepting", "name")})


@SETTINGS
@given(st.binary(max_size=300) | st.builds(lambda b: MAGIC + b, st.binary(max_size=300))
       | record_like.map(raw))
def test_decoding_anything_gives_a_record_or_the_error(data):
    try:
        rec = discovery.decode(data)
    except DiscoveryError:
        return
    assert isinstance(rec, DiscoveryMessage)
    # a datagram without a proto travels on as ours
    sent = rec if rec.proto is not None else dataclasses.replace(rec, proto=PROTOCOL_VERSION)
    assert discovery.decode(encode(rec)) == sent


@SETTINGS
@given(record_like)
def test_parsed_fields_have_their_types(msg):
    try:
        rec = discoverymsg.parse(msg)
    except DiscoveryError:
        return
    if isinstance(rec, NodeAnnouncement | RelayAnnouncement):
        assert type(rec.port) is int and 0 < rec.port < 65536
    if isinstance(rec, Discover):
        assert type(rec.reply_port) is int and 0 < rec.reply_port < 65536
        assert isinstance(rec.client_id, str)


def test_records_handler_gets_records_and_drops_the_rest(caplog):
    got = []
    on_message = discovery.records(lambda rec, addr: got.append(rec), "test")
    proto = DiscoveryProtocol(on_message, "test")
    with caplog.at_level(logging.DEBUG, logger="dispy.discovery"):
        proto.datagram_received(encode(RelayAnnouncement(port=5)), ("10.0.0.1", 9))
        proto.datagram_received(raw({"op": "relay", "port": "x"}), ("10.0.0.2", 9))
        proto.datagram_received(raw({"op": "who"}), ("10.0.0.3", 9))
    assert got == [RelayAnnouncement(port=5)]
    levels = {r.getMessage().split(" from ")[1][:8]: r.levelno for r in caplog.records}
    assert levels == {"10.0.0.2": logging.WARNING, "10.0.0.3": logging.DEBUG}


def test_signature_is_checked_on_records_as_sent_and_received():
    key = b"k" * 32
    rec = discovery.discover(5555, "client-1", key, now=1000.0, ext_ip_addr="192.0.2.1")
    assert discovery.signed_by(rec, key, 1000.0)
    received = discovery.decode(encode(rec))
    assert isinstance(received, Discover) and discovery.signed_by(received, key, 1000.0)
    assert not discovery.signed_by(received, key, 1000.0 + discovery.AUTH_WINDOW + 1)
    assert not discovery.signed_by(dataclasses.replace(rec, ext_ip_addr="192.0.2.2"), key,
                                   1000.0)
    assert not discovery.signed_by(rec, b"x" * 32, 1000.0)
    assert not discovery.signed_by(discovery.discover(5555, "client-1"), key, 1000.0)


@pytest.mark.parametrize("msg, addr, node", [
    ({"op": "node", "port": 5, "ip_addr": "10.0.0.7"}, ("10.0.0.1", 9), ("10.0.0.7", 5)),
    ({"op": "node", "port": 5}, ("10.0.0.1", 9), ("10.0.0.1", 5)),
    ({"op": "node", "port": 5, "ip_addr": "fe80::1"}, ("fe80::1%eth0", 9),
     ("fe80::1%eth0", 5)),
    ({"op": "node", "port": 5, "ip_addr": "fd77:0::1"}, ("10.0.0.1", 9), ("fd77::1", 5)),
    ({"op": "node", "port": "5"}, ("10.0.0.1", 9), None),
    ({"op": "node", "port": 0}, ("10.0.0.1", 9), None),
    ({"op": "relay", "port": 5}, ("10.0.0.1", 9), None),
])
def test_announced_node(msg, addr, node):
    try:
        rec = discovery.decode(raw(msg))
    except DiscoveryError:  # a malformed one never reaches a reader
        assert node is None
        return
    assert discovery.announced_node(rec, addr) == node
