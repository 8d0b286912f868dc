"""dispy.fsafe: ids and paths from peers stay inside their root; the daemon's tree is
private; no symlink in it is followed; uploads are bounded by the bytes really sent."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispy import fsafe
from dispy.wire.messages import File

pytestmark = pytest.mark.timeout(60)

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
ROOT = "/srv/dispy/node-1"
ME = os.geteuid()


# ---- ids ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "8166c66590064cefa3e46ad3054eb157", "1b93.1", "s12.1b93.1", "a_b-c", "x", "a..", "-",
    "A" * 64,
])
def test_valid_ids(value):
    assert fsafe.valid_id(value)
    assert fsafe.check_id(value, "client id") == value


@pytest.mark.parametrize("value", [
    "", ".", "..", ".hidden", "../x", "a/b", "/tmp/x", "a\\b", "a\x00", "x" * 65, "a b",
    "ü", "a\n", None, 5, b"abc", ["a"],
])
def test_invalid_ids(value):
    assert not fsafe.valid_id(value)
    with pytest.raises(fsafe.UnsafePath, match="invalid computation id"):
        fsafe.check_id(value, "computation id")


@SETTINGS
@given(st.text(min_size=0, max_size=80))
def test_a_valid_id_is_one_name_directly_under_its_root(value):
    if fsafe.valid_id(value):
        assert os.path.dirname(os.path.normpath(os.path.join(ROOT, value))) == ROOT
        assert os.path.basename(os.path.join(ROOT, value)) == value


# ---- safe_join --------------------------------------------------------------------------


@pytest.mark.parametrize("parts", [
    ("..",), ("../x",), ("/etc/passwd",), ("a", "../../b"), ("clients", "..", ".."),
    ("a", "/abs"), ("",), ("a", ""), ("a\x00",), (None,), (5,), (".",), ("a/..",),
    ("..\\x",), ("//x",),
])
def test_safe_join_refuses(parts):
    with pytest.raises(fsafe.UnsafePath):
        fsafe.safe_join(ROOT, *parts)


@pytest.mark.parametrize("parts,expected", [
    (("clients", "c1", "1b.1"), "clients/c1/1b.1"), (("a/b.txt",), "a/b.txt"),
    (("a", "x/../b"), "a/b"), (("a\\b",), "a/b"), (("..a",), "..a"), (("a", "./b"), "a/b"),
])
def test_safe_join_accepts(parts, expected):
    assert fsafe.safe_join(ROOT, *parts) == f"{ROOT}/{expected}"


part = st.lists(st.sampled_from(["a", "b", "..", ".", "", "c.txt", "..x", "\\", "/", "\x00"]),
                min_size=1, max_size=6).map("/".join)


@SETTINGS
@given(st.lists(part, min_size=1, max_size=4))
def test_safe_join_never_leaves_its_root(parts):
    try:
        path = fsafe.safe_join(ROOT, *parts)
    except fsafe.UnsafePath:
        return
    assert os.path.normpath(path) == path
    assert path.startswith(ROOT + "/")
    assert fsafe.inside(ROOT, path) == path[len(ROOT) + 1:].split("/")


def test_inside_refuses_paths_elsewhere():
    for path in (ROOT, "/srv/dispy", "/srv/dispy/node-10/x", "/etc/passwd"):
        with pytest.raises(fsafe.UnsafePath):
            fsafe.inside(ROOT, path)


# ---- the checks on a tree ------------------------------------------------------------------


def stat_of(mode: int, uid: int = ME) -> os.stat_result:
    return os.stat_result((mode, 1, 1, 1, uid, 0, 0, 0, 0, 0))


@pytest.mark.parametrize("mode,uid,problem", [
    (stat.S_IFDIR | 0o700, ME, None),
    (stat.S_IFDIR | 0o755, ME, None),
    (stat.S_IFDIR | 0o700, ME + 1, "owned by uid"),
    (stat.S_IFDIR | 0o770, ME, "writable by group or others"),
    (stat.S_IFDIR | 0o1777, ME, "writable by group or others"),
    (stat.S_IFDIR | 0o702, ME, "writable by group or others"),
    (stat.S_IFLNK | 0o777, ME, "symbolic link"),
    (stat.S_IFREG | 0o600, ME, "not a directory"),
])
def test_tree_problem(mode, uid, problem):
    found = fsafe.tree_problem(stat_of(mode, uid), ME)
    assert found is None if problem is None else problem in found


@pytest.mark.parametrize("mode,ok", [
    (stat.S_IFDIR | 0o1777, True), (stat.S_IFDIR | 0o755, True), (stat.S_IFDIR | 0o700, True),
    (stat.S_IFDIR | 0o777, False), (stat.S_IFDIR | 0o775, False), (stat.S_IFREG | 0o644, False),
])
def test_prefix_problem(mode, ok):
    assert (fsafe.prefix_problem(stat_of(mode, 12345)) is None) == ok


# ---- the tree on disk ----------------------------------------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_private_tree_is_made_0700_and_narrowed(tmp_path):
    old = os.umask(0)
    try:
        path = fsafe.private_tree(str(tmp_path / "new-prefix"), ("dispy", "node-1"))
    finally:
        os.umask(old)
    assert path == str(tmp_path / "new-prefix" / "dispy" / "node-1")
    assert mode_of(tmp_path / "new-prefix" / "dispy") == 0o700
    assert mode_of(Path(path)) == 0o700
    os.chmod(path, 0o755)  # left by an older version
    fsafe.private_tree(str(tmp_path / "new-prefix"), ("dispy", "node-1"))
    assert mode_of(Path(path)) == 0o700


def test_private_tree_refuses_a_symlink(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "dispy")
    with pytest.raises(fsafe.UnsafePath, match="symbolic link"):
        fsafe.private_tree(str(tmp_path), ("dispy", "node-1"))
    assert os.listdir(tmp_path / "elsewhere") == []


def test_private_tree_refuses_others_trees(tmp_path):
    (tmp_path / "dispy" / "node-1").mkdir(parents=True)
    with pytest.raises(fsafe.UnsafePath, match="owned by uid"):
        fsafe.private_tree(str(tmp_path), ("dispy", "node-1"), uid=ME + 1)
    os.chmod(tmp_path / "dispy" / "node-1", 0o777)
    with pytest.raises(fsafe.UnsafePath, match="writable by group or others"):
        fsafe.private_tree(str(tmp_path), ("dispy", "node-1"))


def test_private_tree_refuses_a_shared_prefix_without_sticky_bit(tmp_path):
    prefix = tmp_path / "shared"
    prefix.mkdir()
    os.chmod(prefix, 0o777)
    with pytest.raises(fsafe.UnsafePath, match="not sticky"):
        fsafe.private_tree(str(prefix), ("dispy",))
    os.chmod(prefix, 0o1777)
    fsafe.private_tree(str(prefix), ("dispy",))


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    os.symlink(outside, root / "link_dir")
    os.symlink(outside / "precious", root / "link_file")
    return root


def test_open_beneath_follows_no_symlink(tree):
    root = str(tree)
    for rel in ("link_file", "link_dir/precious", "link_dir/new"):
        with pytest.raises(OSError):  # UnsafePath is a ValueError; ELOOP/ENOTDIR an OSError
            try:
                os.close(fsafe.open_beneath(root, f"{root}/{rel}",
                                            os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600, True))
            except fsafe.UnsafePath as exc:
                raise OSError(str(exc)) from None
    assert (tree.parent / "outside" / "precious").read_text() == "keep"
    assert not (tree.parent / "outside" / "new").exists()
    fd = fsafe.open_beneath(root, f"{root}/a/b/c.txt", os.O_WRONLY | os.O_CREAT, 0o600, True)
    os.close(fd)
    assert mode_of(tree / "a") == 0o700 and mode_of(tree / "a" / "b" / "c.txt") == 0o600


def test_remove_beneath_removes_links_not_their_targets(tree):
    root = str(tree)
    (tree / "comp").mkdir()
    os.symlink(tree.parent / "outside", tree / "comp" / "inner_link")
    (tree / "comp" / "f.txt").write_text("x")
    assert fsafe.remove_beneath(root, f"{root}/comp")
    assert fsafe.remove_beneath(root, f"{root}/link_file")
    assert fsafe.remove_beneath(root, f"{root}/link_dir")
    assert not fsafe.remove_beneath(root, f"{root}/link_dir/precious")  # through a link: no
    assert os.listdir(tree) == []
    assert (tree.parent / "outside" / "precious").read_text() == "keep"
    assert not fsafe.remove_beneath(root, str(tree.parent / "outside"))  # not inside root
    assert (tree.parent / "outside" / "precious").exists()


def test_remove_beneath_only_empty(tree):
    root = str(tree)
    (tree / "d").mkdir()
    (tree / "d" / "f").write_text("x")
    assert not fsafe.remove_beneath(root, f"{root}/d", only_empty=True)
    os.unlink(tree / "d" / "f")
    assert fsafe.remove_beneath(root, f"{root}/d", only_empty=True)
    assert not (tree / "d").exists()


def test_clear_tree_keeps_what_is_asked(tree):
    (tree / "node.pid").write_text("1")
    (tree / "d").mkdir()
    fsafe.clear_tree(str(tree), keep=("node.pid",))
    assert os.listdir(tree) == ["node.pid"]
    assert (tree.parent / "outside" / "precious").read_text() == "keep"


def test_private_file(tmp_path):
    path = tmp_path / "r.db"
    old = os.umask(0)
    try:
        fsafe.private_file(str(path))
    finally:
        os.umask(old)
    assert mode_of(path) == 0o600
    os.chmod(path, 0o644)
    (tmp_path / "r.db-wal").write_text("")
    os.chmod(tmp_path / "r.db-wal", 0o644)
    fsafe.private_file(str(path))
    assert mode_of(path) == 0o600 and mode_of(tmp_path / "r.db-wal") == 0o600
    os.unlink(tmp_path / "r.db-wal")
    os.symlink(tmp_path / "target", tmp_path / "r.db-wal")
    with pytest.raises(fsafe.UnsafePath, match="symbolic link"):
        fsafe.private_file(str(path))
    os.symlink(tmp_path / "target", tmp_path / "s.db")
    with pytest.raises(fsafe.UnsafePath, match="symbolic link"):
        fsafe.private_file(str(tmp_path / "s.db"))
    assert not (tmp_path / "target").exists()


# ---- uploads --------------------------------------------------------------------------------


def chunk(data: bytes, offset: int = 0, final: bool = True, size: int | None = None,
          mode: int = 0o644) -> File:
    return File(path="f.bin", size=len(data) if size is None else size, offset=offset,
                final=final, mtime=1_000_000.0, mode=mode)


def test_write_chunk_counts_bytes_sent(tmp_path):
    root, path = str(tmp_path), str(tmp_path / "c" / "f.bin")
    with pytest.raises(ValueError, match="max_file_size of 100"):  # declared too big
        fsafe.write_chunk(root, path, chunk(b"x", size=101), [b"x"], 100)
    with pytest.raises(ValueError, match="101 bytes"):  # declared small, sent more
        fsafe.write_chunk(root, path, chunk(b"", size=10), [b"x" * 101], 100)
    assert not fsafe.write_chunk(root, path, chunk(b"", size=10, final=False), [b"x" * 60], 100)
    with pytest.raises(ValueError, match="max_file_size"):  # together over the limit
        fsafe.write_chunk(root, path, chunk(b"", size=10, offset=60), [b"x" * 60], 100)
    assert not os.path.exists(path)  # the partial file is gone
    with pytest.raises(ValueError, match="max_file_size"):  # sparse, far past the end
        fsafe.write_chunk(root, path, chunk(b"", size=10, offset=1 << 40), [b"x"], 100)
    with pytest.raises(ValueError, match="negative offset"):
        fsafe.write_chunk(root, path, chunk(b"", offset=-5), [b"x"], 100)
    assert fsafe.write_chunk(root, path, chunk(b"", size=100), [b"x" * 50, b"y" * 50], 100)
    assert Path(path).read_bytes() == b"x" * 50 + b"y" * 50


def test_write_chunk_in_pieces_keeps_mode_without_setid_bits_and_mtime(tmp_path):
    root, path = str(tmp_path), str(tmp_path / "f.bin")
    assert not fsafe.write_chunk(root, path, chunk(b"", size=6, final=False), [b"abc"])
    assert fsafe.write_chunk(root, path, chunk(b"", size=6, offset=3, mode=0o4755), [b"def"])
    st_ = os.stat(path)
    assert Path(path).read_bytes() == b"abcdef"
    assert stat.S_IMODE(st_.st_mode) == 0o755 and st_.st_mtime == 1_000_000.0


def test_write_chunk_follows_no_symlink(tree):
    root = str(tree)
    for rel in ("link_file", "link_dir/precious"):
        with pytest.raises((OSError, ValueError)):
            fsafe.write_chunk(root, f"{root}/{rel}", chunk(b"evil"), [b"evil"])
    assert (tree.parent / "outside" / "precious").read_text() == "keep"


def test_a_file_appears_only_when_complete(tree):
    """Job processes may read a file while it arrives (Executor's function files): until
    its last chunk it exists only under a temporary name."""
    root = str(tree)
    path = f"{root}/sub/f.bin"
    first = chunk(b"ab", size=4, final=False)
    assert fsafe.write_chunk(root, path, first, [b"ab"]) is False
    assert not os.path.exists(path)
    last = chunk(b"cd", size=4, offset=2, final=True)
    assert fsafe.write_chunk(root, path, last, [b"cd"]) is True
    assert open(path, "rb").read() == b"abcd"
    assert os.listdir(f"{root}/sub") == ["f.bin"]
