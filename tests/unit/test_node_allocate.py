"""NodeAllocate matching and CPU counts, and to_allocations normalisation."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispy import config
from dispy.client.nodes import DispyNode, NodeAllocate, to_allocations

pytestmark = pytest.mark.timeout(30)

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

octets = st.integers(0, 255)
ips = st.tuples(octets, octets, octets, octets).map(lambda t: ".".join(map(str, t)))


def test_exact_ip_matches_whole_address_only():
    alloc = NodeAllocate("10.0.0.1")
    assert alloc.matches("10.0.0.1")
    assert not alloc.matches("10.0.0.12")
    assert not alloc.matches("110.0.0.1")
    assert not alloc.matches("10.0.0.1.5")
    assert not alloc.matches("10x0x0x1")  # dots are not regex wildcards


def test_wildcard_pattern():
    alloc = NodeAllocate("10.0.0.*")
    assert alloc.wildcard
    assert alloc.matches("10.0.0.12")
    assert alloc.matches("10.0.0.1")
    assert not alloc.matches("10.0.1.3")
    assert not alloc.matches("10.0.01")
    assert not alloc.matches("110.0.0.3")


@SETTINGS
@given(ips)
def test_star_matches_anything(ip):
    assert NodeAllocate("*").matches(ip)


@SETTINGS
@given(ips, ips)
def test_exact_ip_matches_only_itself(a, b):
    assert NodeAllocate(a).matches(b) == (a == b)


def test_port_must_agree_when_both_given():
    alloc = NodeAllocate("10.0.0.1", port=9000)
    assert alloc.matches("10.0.0.1", 9000)
    assert alloc.matches("10.0.0.1")
    assert not alloc.matches("10.0.0.1", 9001)
    assert NodeAllocate("10.0.0.1").matches("10.0.0.1", 1234)


@pytest.mark.parametrize("want,node_cpus,expected", [
    (0, 4, 4), (2, 4, 2), (8, 4, 4), (-1, 4, 3), (-4, 4, 0), (-8, 4, 0), (1, 0, 0), (-1, 1, 0),
])
def test_allocate_counts(want, node_cpus, expected):
    alloc = NodeAllocate("*", cpus=want)
    assert alloc.allocate(None, "1.2.3.4", "n", node_cpus) == expected


def test_allocate_negative_floored_at_zero():
    assert NodeAllocate("*", cpus=-8).allocate(None, "1.2.3.4", "n", 4) == 0


@SETTINGS
@given(st.integers(-20, 20), st.integers(0, 64))
def test_allocate_is_within_bounds(want, node_cpus):
    got = NodeAllocate("*", cpus=want).allocate(None, "1.2.3.4", "n", node_cpus)
    assert 0 <= got <= node_cpus
    if want > 0:
        assert got == min(want, node_cpus)
    elif want < 0:
        assert got == max(0, node_cpus + want)
    else:
        assert got == node_cpus


def test_allocate_zero_when_not_matching():
    assert NodeAllocate("10.0.0.1", cpus=2).allocate(None, "10.0.0.12", "n", 4) == 0


def test_subclass_can_override_allocate():
    class OnlyBig(NodeAllocate):
        def allocate(self, cluster, ip_addr, name, cpus, avail_info=None, platform=""):
            return cpus if cpus >= 8 else 0

    assert OnlyBig("*").allocate(None, "1.1.1.1", "n", 4) == 0
    assert OnlyBig("*").allocate(None, "1.1.1.1", "n", 8) == 8


@pytest.mark.parametrize("host", ["", None, 5, b"10.0.0.1"])
def test_invalid_host(host):
    with pytest.raises(ValueError):
        NodeAllocate(host)


@pytest.mark.parametrize("setup_args", [[1, 2], "ab", {"a": 1}, None])
def test_setup_args_must_be_a_tuple(setup_args):
    with pytest.raises(ValueError, match="tuple"):
        NodeAllocate("*", setup_args=setup_args)
    assert NodeAllocate("*", setup_args=(1, 2)).setup_args == (1, 2)


def test_to_allocations_none_is_star():
    allocs = to_allocations(None)
    assert [a.host for a in allocs] == ["*"]
    assert allocs[0].port == config.NodePort


def test_to_allocations_single_string():
    allocs = to_allocations("10.0.0.*", node_port=1234)
    assert [(a.host, a.port) for a in allocs] == [("10.0.0.*", 1234)]


def test_to_allocations_tuple_is_host_and_port():
    allocs = to_allocations(("10.0.0.1", 5000))
    assert [(a.host, a.port) for a in allocs] == [("10.0.0.1", 5000)]


def test_to_allocations_mixed_list():
    given_alloc = NodeAllocate("10.0.0.5", cpus=2)
    node = DispyNode("10.0.0.9", "n9", 4, 7000)
    allocs = to_allocations(
        ["10.0.0.*", ("10.0.0.1", 5000), {"host": "10.0.0.2", "cpus": -1}, given_alloc, node],
        node_port=4444,
    )
    by_host = {a.host: a for a in allocs}
    assert set(by_host) == {"10.0.0.*", "10.0.0.1", "10.0.0.2", "10.0.0.5", "10.0.0.9"}
    assert by_host["10.0.0.1"].port == 5000
    assert by_host["10.0.0.2"].port == 4444 and by_host["10.0.0.2"].cpus == -1
    assert by_host["10.0.0.5"] is given_alloc and given_alloc.port == 4444
    assert by_host["10.0.0.9"].port == 7000
    assert by_host["10.0.0.*"].port == 4444
    # Exact hosts come before wildcards.
    assert allocs[-1].host == "10.0.0.*"


def test_to_allocations_single_dict_and_nodeallocate():
    assert to_allocations({"host": "10.0.0.3"})[0].host == "10.0.0.3"
    alloc = NodeAllocate("10.0.0.4", port=1)
    assert to_allocations(alloc) == [alloc]
    assert alloc.port == 1


@pytest.mark.parametrize("bad", [[5], [None], [1.5], [object()], [("10.0.0.1", "port")],
                                 ("10.0.0.1", "nope"), [""], [{"host": ""}]])
def test_to_allocations_invalid_entries(bad):
    with pytest.raises(ValueError):
        to_allocations(bad)


@pytest.mark.parametrize("bad", [[{"hostname": "10.0.0.1"}], [("10.0.0.1", 1, 2, [], (), 9)]])
def test_to_allocations_bad_shape_is_value_error(bad):
    with pytest.raises(ValueError):
        to_allocations(bad)


@pytest.mark.parametrize("pattern", ["10.0.0.\\*", "10\\.0\\.0\\.\\*", "10.0.0.*"])
def test_escaped_wildcard_matches_like_the_original(pattern):
    alloc = NodeAllocate(pattern)
    assert alloc.wildcard and alloc.host == "10.0.0.*"
    assert alloc.matches("10.0.0.5") and alloc.matches("10.0.0.254")
    assert not alloc.matches("10.0.1.5")
