"""parse_size and safe_join: sizes with units, and paths that stay under the root."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispy.daemon.files import parse_size, safe_join, too_big

pytestmark = pytest.mark.timeout(30)

SETTINGS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.mark.parametrize("text,expected", [
    ("10k", 10240), ("10K", 10240), ("10kb", 10240), ("1m", 1 << 20), ("2g", 2 << 30),
    ("1t", 1 << 40), ("0", 0), ("5", 5), (" 7 ", 7), ("1.5k", 1536), ("3 MB", 3 << 20),
    (0, 0), (123, 123),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", [
    "", "k", "-5", "10x", "1kk", "ten", "1 0", "1e3", "0x10", "10 k m", -1, "5p", "--1",
])
def test_parse_size_invalid(text):
    with pytest.raises(ValueError):
        parse_size(text)


@SETTINGS
@given(st.integers(0, 10**6), st.sampled_from(["", "k", "m", "g", "t"]))
def test_parse_size_units(n, unit):
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[unit]
    assert parse_size(f"{n}{unit}") == n * factor
    assert parse_size(f"{n}{unit.upper()}") == n * factor


def test_too_big():
    assert too_big(10, 0) is None
    assert too_big(10, 10) is None
    assert "max_file_size" in too_big(11, 10)


@pytest.mark.parametrize("rel", [
    "../x", "..", "/etc/passwd", "a/../../b", "", "a\x00b", "\x00", "a/b/../../../c",
    "..\\x", "a\\..\\..\\b", "//etc/passwd", "./../x",
])
def test_safe_join_refuses(tmp_path, rel):
    with pytest.raises(ValueError):
        safe_join(str(tmp_path), rel)


@pytest.mark.parametrize("rel", [None, 5, b"a.txt"])
def test_safe_join_refuses_non_str(tmp_path, rel):
    with pytest.raises(ValueError):
        safe_join(str(tmp_path), rel)


@pytest.mark.parametrize("rel,expected", [
    ("a/b.txt", "a/b.txt"), ("a.txt", "a.txt"), ("a/./b", "a/b"), ("a/x/../b", "a/b"),
    ("a\\b.txt", "a/b.txt"), ("..a/b", "..a/b"), ("a..", "a.."),
])
def test_safe_join_accepts(tmp_path, rel, expected):
    root = str(tmp_path)
    assert safe_join(root, rel) == os.path.join(root, expected)


segments = st.lists(
    st.sampled_from(["a", "b", "..", ".", "", "c.txt", "..x", "\\", "/"]), min_size=1, max_size=8
).map("/".join)


@SETTINGS
@given(segments)
def test_safe_join_never_escapes(rel):
    root = "/srv/dispy/comp"
    try:
        path = safe_join(root, rel)
    except ValueError:
        return
    real = os.path.normpath(path)
    assert real == root or real.startswith(root + os.sep)
