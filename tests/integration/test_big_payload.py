"""Big byte strings as arguments and results (sent out of band) keep value and type."""

from __future__ import annotations

import os

import pytest

import dispy

pytestmark = pytest.mark.timeout(90)


def echo(*args, **kwargs):
    return args, kwargs, (args[0] if args else None)


def test_big_arguments_and_results(node):
    big = os.urandom(3 << 20)
    mid = os.urandom(200_000)
    with dispy.JobCluster(echo, nodes=["127.0.0.1"], node_port=node.port, port=0,
                          reentrant=True) as cluster:
        jobs = [cluster.submit(big, bytearray(mid), 7, key=big),
                cluster.submit(bytearray(big)),
                cluster.submit(mid)]
        (args, kwargs, first), (args2, _, first2), (args3, _, first3) = [j() for j in jobs]
        assert all(j.status == dispy.DispyJob.Finished for j in jobs), [j.exception
                                                                         for j in jobs]
    assert type(args[0]) is bytes and args[0] == big and first == big
    assert type(args[1]) is bytearray and args[1] == mid and args[2] == 7
    assert kwargs == {"key": big}
    assert type(args2[0]) is bytearray and args2[0] == big and type(first2) is bytearray
    assert type(first3) is bytes and first3 == mid
