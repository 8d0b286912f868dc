"""A job process's sends on its lane (node/lanes.py ``Lane.send``) give up on a program
that reads none of a result for ``SEND_TIMEOUT``, or reads a big one slower than
``SEND_RATE`` allows (the daemon then sends it from its copy); a reader that keeps up
gets it whole."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from dispy.node import lanes
from dispy.wire import hostmsg
from dispy.wire.sync import SyncFrameReader

pytestmark = pytest.mark.timeout(60)
KEY = "ab" * 32


def lane_pair() -> tuple[lanes.Lane, socket.socket]:
    ours, program = socket.socketpair()
    lane = lanes.Lane(hostmsg.LaneHandOver(send_key=KEY, recv_key=KEY, send_seq=0,
                                           recv_seq=0), ours.detach())
    return lane, program


def reader(sock: socket.socket, chunk: int, pause: float, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            if not sock.recv(chunk):
                return
        except OSError:
            return
        time.sleep(pause)


def test_a_program_that_reads_nothing_loses_the_result_to_the_daemon(monkeypatch):
    monkeypatch.setattr(lanes, "SEND_TIMEOUT", 0.3)
    lane, program = lane_pair()
    try:
        with pytest.raises(lanes.LaneGone):
            lane.send({"op": "done", "uid": "u"}, [b"r" * (8 << 20)])
    finally:
        lane.close()
        program.close()


def test_a_program_that_reads_too_slowly_loses_the_result_to_the_daemon(monkeypatch):
    monkeypatch.setattr(lanes, "SEND_TIMEOUT", 1.0)
    monkeypatch.setattr(lanes, "SEND_RATE", 64 << 20)
    lane, program = lane_pair()
    stop = threading.Event()  # (it reads on, about 3 MB/s: never a second without)
    thread = threading.Thread(target=reader, args=(program, 65536, 0.02, stop), daemon=True)
    thread.start()
    try:
        with pytest.raises(lanes.LaneGone, match="too slowly"):
            lane.send({"op": "done", "uid": "u"}, [b"r" * (16 << 20)])
    finally:
        stop.set()
        lane.close()
        program.close()
        thread.join(10)


def test_a_program_that_keeps_up_gets_the_result_whole(monkeypatch):
    monkeypatch.setattr(lanes, "SEND_TIMEOUT", 5.0)
    lane, program = lane_pair()
    got: list = []

    def read() -> None:
        frames = SyncFrameReader(program)
        frames.decoder.seal(bytes.fromhex(KEY), frames.decoder._parser.limits)
        got.append(frames.read_frame())  # (LaneReady)
        got.append(frames.read_frame())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        lane.send({"op": "done", "uid": "u"}, [b"r" * (8 << 20)])
        thread.join(30)
        header, bufs = got[1]
        assert header["uid"] == "u" and bytes(bufs[0]) == b"r" * (8 << 20)
    finally:
        lane.close()
        program.close()
