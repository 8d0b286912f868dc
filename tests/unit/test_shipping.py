"""package() and pack_args(): what is pickled must load and run in a fresh interpreter."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading

import cloudpickle
import pytest

from dispy.client import shipping
from dispy.client.shipping import FileSpec, pack_args, package

pytestmark = pytest.mark.timeout(30)

FACTOR = 7
_LOCK = threading.Lock()
SHARED = None

RUNNER = r"""
import json, sys
import cloudpickle
out = []
for path, args_path in zip(sys.argv[1::2], sys.argv[2::2]):
    with open(path, "rb") as fh:
        bundle = cloudpickle.loads(fh.read())
    with open(args_path, "rb") as fh:
        args, kwargs = cloudpickle.loads(fh.read())
    if bundle.get("setup") is not None:
        bundle["setup"]()
    out.append(bundle["computation"](*args, **kwargs))
print(json.dumps(out))
"""


def run_fresh(tmp_path, calls):
    """calls: [(Package, args bytes)]; loads and runs each in ONE fresh interpreter."""
    argv = []
    for i, (pkg, args) in enumerate(calls):
        bundle, packed = tmp_path / f"bundle{i}.pkl", tmp_path / f"args{i}.pkl"
        bundle.write_bytes(pkg.bundle)
        packed.write_bytes(args)
        argv += [str(bundle), str(packed)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", RUNNER, *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=25)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def helper(x):
    return x * FACTOR


def module_level(x, y=1):
    return helper(x) + y


def make_adder(k):
    def add(x):
        return helper(x) + k

    return add


def set_shared():
    global SHARED
    SHARED = 1000


def read_shared(x):
    return SHARED + x


def uses_lock():
    with _LOCK:
        return 1


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm1(self):
        return abs(self.x) + abs(self.y)


def point_norm(p):
    return p.norm1()


def test_functions_run_by_value_in_fresh_interpreter(tmp_path):
    def local(x, *, scale):
        return [x * scale, FACTOR]

    calls = [
        (package(lambda x: x * 3, [], None, None), pack_args((14,), {})),
        (package(make_adder(5), [], None, None), pack_args((2,), {})),
        (package(local, [], None, None), pack_args((3,), {"scale": 10})),
        (package(module_level, [], None, None), pack_args((1,), {"y": 100})),
        (package(read_shared, [], set_shared, None), pack_args((1,), {})),
        (package(point_norm, [Point], None, None), pack_args((Point(-3, 4),), {})),
    ]
    assert run_fresh(tmp_path, calls) == [42, 19, [30, 7], 107, 1001, 7]


def test_test_module_is_not_importable_in_fresh_interpreter(tmp_path):
    """Guard for the test above: success must come from shipping by value."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", f"import {__name__}"], cwd=tmp_path, env=env,
                          capture_output=True, timeout=25)
    assert proc.returncode != 0


def test_package_contents(tmp_path):
    dep = tmp_path / "data.txt"
    dep.write_text("hello")
    pkg = package(module_level, [str(dep), helper, Point(1, 2)], set_shared, read_shared)
    bundle = cloudpickle.loads(pkg.bundle)
    assert bundle["computation"](2) == 15
    assert set(bundle["globals"]) == {"helper", "Point"}
    assert bundle["setup"] is not None and bundle["cleanup"] is not None
    assert pkg.program is None
    assert pkg.files == [FileSpec(str(dep), "data.txt")]


def test_program_computation(tmp_path):
    prog = tmp_path / "prog.sh"
    prog.write_text("#!/bin/sh\necho hi\n")
    pkg = package(str(prog), [], None, None)
    assert pkg.program == "prog.sh"
    assert pkg.files == [FileSpec(str(prog), "prog.sh")]
    assert cloudpickle.loads(pkg.bundle)["program"] == "prog.sh"
    assert package("ls", [], None, None).program == "ls"
    with pytest.raises(ValueError, match="does not exist"):
        package(str(tmp_path / "nope" / "prog"), [], None, None)


def test_missing_dependency_path(tmp_path):
    with pytest.raises(ValueError, match="not a file"):
        package(helper, [str(tmp_path / "missing.py")], None, None)
    with pytest.raises(ValueError, match="not a file"):
        package(helper, [str(tmp_path)], None, None)  # a directory is not a file


def test_unpicklable_global_cannot_be_shipped():
    with pytest.raises(ValueError, match="cannot be shipped"):
        package(uses_lock, [], None, None)


def test_unpicklable_closure_cannot_be_shipped():
    lock = threading.Lock()

    def f():
        return lock.locked()

    with pytest.raises(ValueError, match="cannot be shipped"):
        package(f, [], None, None)


@pytest.mark.parametrize("computation", [42, None, b"prog"])
def test_invalid_computation(computation):
    with pytest.raises(ValueError):
        package(computation, [], None, None)


def test_setup_and_cleanup_must_be_callable():
    with pytest.raises(ValueError, match="setup"):
        package(helper, [], "not callable", None)
    with pytest.raises(ValueError, match="cleanup"):
        package(helper, [], None, 5)


def test_pack_args_round_trip():
    data = pack_args((1, "a", b"b", None, [1, 2], Point(1, 2)), {"k": 1.5})
    args, kwargs = cloudpickle.loads(data)
    assert args[:5] == (1, "a", b"b", None, [1, 2])
    assert args[5].norm1() == 3
    assert kwargs == {"k": 1.5}


def test_pack_args_unpicklable():
    with pytest.raises(ValueError, match="cannot be pickled"):
        pack_args((threading.Lock(),), {})
    with pytest.raises(ValueError, match="cannot be pickled"):
        pack_args((), {"lock": threading.Lock()})
    with pytest.raises(ValueError, match="cannot be pickled"):
        pack_args(((x for x in range(3)),), {})


def test_relpath_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f.py").write_text("")
    assert shipping.relpath_for(str(tmp_path / "sub" / "f.py")) == os.path.join("sub", "f.py")
    assert shipping.relpath_for("/etc/hostname") == "hostname"


def test_module_dependency_ships_files(tmp_path, monkeypatch):
    pkg_dir = tmp_path / "mypkg_for_ship"
    (pkg_dir / "sub").mkdir(parents=True)
    (pkg_dir / "__init__.py").write_text("X = 1\n")
    (pkg_dir / "sub" / "mod.py").write_text("Y = 2\n")
    (pkg_dir / "__pycache__").mkdir()
    (pkg_dir / "__pycache__" / "junk.pyc").write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("mypkg_for_ship")
    try:
        files = package(helper, [mod], None, None).files
    finally:
        sys.modules.pop("mypkg_for_ship", None)
    assert sorted(f.relpath for f in files) == [
        os.path.join("mypkg_for_ship", "__init__.py"),
        os.path.join("mypkg_for_ship", "sub", "mod.py"),
    ]


def test_job_dependencies(tmp_path):
    dep = tmp_path / "extra.txt"
    dep.write_text("x")
    data, files = shipping.job_dependencies([helper, str(dep)])
    assert set(cloudpickle.loads(data)) == {"helper"}
    assert files == [FileSpec(str(dep), "extra.txt")]
    with pytest.raises(ValueError, match="not a file"):
        shipping.job_dependencies([str(tmp_path / "missing")])
    with pytest.raises(ValueError, match="cannot be shipped"):
        shipping.job_dependencies([uses_lock])


def test_unpicklable_argument_is_named_with_its_type():
    import threading

    from dispy.client.shipping import pack_job_args

    with pytest.raises(ValueError) as exc:
        pack_job_args((1, threading.Lock()), {})
    assert "argument 2 is a _thread.lock" in str(exc.value)
    with pytest.raises(ValueError) as exc:
        pack_job_args((), {"lock": threading.Lock()})
    assert "keyword argument 'lock' is a _thread.lock" in str(exc.value)


def test_shipped_code_keeps_its_file_name_and_source():
    import cloudpickle

    from dispy.client.shipping import dumps_code, sources_of

    def local(x):
        return x + 1

    data, names = dumps_code({"f": local})
    assert __file__ in names
    assert cloudpickle.loads(data)["f"].__code__.co_filename == __file__
    assert "def local(x):\n" in "".join(sources_of(names)[__file__])
    assert sources_of({"<stdin>"}) == {}
