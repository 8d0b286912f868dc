"""Packing a computation for the nodes: code by value, files by path.

The computation, setup, cleanup and code dependencies go into ONE cloudpickle so they
share one global namespace on the node (setup's ``global x`` is seen by jobs).
Functions from the program's own modules are shipped by value; modules and packages
in ``depends`` are shipped as files and imported on the node.
"""

from __future__ import annotations

import collections
import functools
import inspect
import io
import linecache
import os
import pickle
import shutil
import sys
import sysconfig
import threading
import types
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from ..wire import oob

_INSTALLED = tuple(
    os.path.realpath(p) + os.sep
    for p in {sysconfig.get_path(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    if p
)


@dataclass
class FileSpec:
    """A local file to copy to the node, at ``relpath`` under the computation's directory."""

    local: str
    relpath: str


@dataclass
class Package:
    bundle: bytes
    files: list[FileSpec] = field(default_factory=list)
    program: str | None = None


def _is_user_module(mod: types.ModuleType | None) -> bool:
    """A module of the program itself (not installed, not dispy): ship it by value."""
    if mod is None or mod.__name__ == "__main__" or mod.__name__.split(".")[0] == "dispy":
        return False
    path = getattr(mod, "__file__", None)
    if not path:
        return False
    return not os.path.realpath(path).startswith(_INSTALLED)


def ship_by_value(obj: Any) -> None:
    """Make cloudpickle copy the code of ``obj``'s module instead of naming it."""
    target = obj.__func__ if isinstance(obj, types.MethodType) else obj
    if isinstance(target, functools.partial):
        target = target.func
    mod = inspect.getmodule(target) if not isinstance(target, types.ModuleType) else None
    if mod is None and not isinstance(target, type):
        mod = inspect.getmodule(type(target))
    if _is_user_module(mod):
        assert mod is not None
        top = sys.modules.get(mod.__name__.split(".")[0], mod)
        try:
            cloudpickle.register_pickle_by_value(top if _is_user_module(top) else mod)
        except ValueError:
            pass


def relpath_for(path: str) -> str:
    """Where a file goes on the node: its path under our cwd, else just its name."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full, os.getcwd())
    if rel.startswith(".."):
        return os.path.basename(full)
    return rel


def _module_files(mod: types.ModuleType) -> list[FileSpec]:
    """The source files of a module, or of a whole package, keeping the package layout."""
    path = getattr(mod, "__file__", None)
    if not path:
        raise ValueError(f"module {mod.__name__} has no file to ship")
    if os.path.basename(path) != "__init__.py":
        return [FileSpec(path, os.path.basename(path))]
    pkg_dir = os.path.dirname(path)
    top = mod.__name__.replace(".", os.sep)
    out = []
    for root, dirs, files in os.walk(pkg_dir):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith((".pyc", ".pyo")):
                continue
            full = os.path.join(root, name)
            out.append(FileSpec(full, os.path.join(top, os.path.relpath(full, pkg_dir))))
    return out


def dependencies(depends: list[Any]) -> tuple[dict[str, Any], list[FileSpec]]:
    """Split ``depends`` into code objects (by name) and files to copy."""
    names: dict[str, Any] = {}
    files: list[FileSpec] = []
    for dep in depends:
        if isinstance(dep, str):
            if not os.path.isfile(dep):
                raise ValueError(f"dependency {dep!r} is not a file")
            files.append(FileSpec(os.path.abspath(dep), relpath_for(dep)))
        elif isinstance(dep, types.ModuleType):
            files.extend(_module_files(dep))
        elif isinstance(dep, functools.partial):
            ship_by_value(dep.func)
            names[dep.func.__name__] = dep.func
        elif isinstance(dep, (types.FunctionType, type, types.MethodType)):
            ship_by_value(dep)
            names[dep.__name__] = dep
        else:  # an instance: its class is what the node needs
            cls = type(dep)
            ship_by_value(cls)
            names[cls.__name__] = cls
    return names, files


def _program(computation: str) -> tuple[str, list[FileSpec]]:
    if os.path.isfile(computation):
        name = os.path.basename(computation)
        return name, [FileSpec(os.path.abspath(computation), name)]
    if shutil.which(computation) is None and os.sep in computation:
        raise ValueError(f"program {computation!r} does not exist")
    return computation, []


def package(computation: Any, depends: list[Any], setup: Any, cleanup: Any) -> Package:
    """Pickle everything the nodes need; raises ValueError with the reason if it can't."""
    for fn, what in ((setup, "setup"), (cleanup, "cleanup")):
        if fn is not None and not callable(fn):
            raise ValueError(f"{what} must be a function")
    names, files = dependencies(depends)
    bundle: dict[str, Any] = {"globals": names, "setup": setup, "cleanup": cleanup}
    program = None
    if isinstance(computation, str):
        program, prog_files = _program(computation)
        files = prog_files + files
        bundle["program"] = program
    elif callable(computation):
        ship_by_value(computation)
        bundle["computation"] = computation
    else:
        raise ValueError(f"invalid computation {computation!r}: a function or a program path")
    for fn in (setup, cleanup):
        if fn is not None:
            ship_by_value(fn)
    try:
        _, filenames = dumps_code(bundle)
        bundle["sources"] = sources_of(filenames)
        data, _ = dumps_code(bundle)
    except Exception as exc:
        raise ValueError(f"computation cannot be shipped to nodes: {exc}") from exc
    return Package(data, files, program)


#: Source text shipped so tracebacks on nodes show lines: at most this much per file.
MAX_SOURCE = 1 << 20


def _code_reduce_keeping_filename(code: types.CodeType) -> Any:
    """cloudpickle's reduction of a code object, but keeping its file name (cloudpickle
    writes "<dynamic-code>"), so a traceback on the node names the user's file."""
    ctor, args = cloudpickle.cloudpickle._code_reduce(code)
    return ctor, tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)


class _CodePickler(cloudpickle.Pickler):
    """A cloudpickle Pickler that keeps code objects' file names and records them."""

    dispatch_table = collections.ChainMap(
        {types.CodeType: lambda code: _CodePickler._current.reduce_code(code)},
        cloudpickle.Pickler.dispatch_table,
    )
    _current: _CodePickler

    def __init__(self, fh: Any) -> None:
        super().__init__(fh, protocol=5)
        self.filenames: set[str] = set()

    def reduce_code(self, code: types.CodeType) -> Any:
        self.filenames.add(code.co_filename)
        return _code_reduce_keeping_filename(code)


_pickle_lock = threading.Lock()


def dumps_code(obj: Any) -> tuple[bytes, set[str]]:
    """Pickle ``obj`` with cloudpickle keeping the code's file names; also returns them."""
    fh = io.BytesIO()
    with _pickle_lock:  # the dispatch table reaches the pickler through _current
        pickler = _CodePickler._current = _CodePickler(fh)
        pickler.dump(obj)
    return fh.getvalue(), pickler.filenames


def sources_of(filenames: set[str]) -> dict[str, list[str]]:
    """The source lines of these files (real files, or notebook cells linecache knows)."""
    out = {}
    for name in filenames:
        if name.startswith("<") and name not in linecache.cache:
            continue
        lines = linecache.getlines(name)
        if lines and sum(len(ln) for ln in lines) <= MAX_SOURCE:
            out[name] = lines
    return out


#: Argument byte strings from this size on travel out of band (uncopied). As big as the
#: largest arguments the recover file keeps: a job with out-of-band buffers is not kept.
ARGS_OOB_MIN = 1 << 20
_PLAIN = oob.PLAIN_SCALARS
_BYTES = frozenset((bytes, bytearray))


def pack_args(args: tuple, kwargs: dict) -> bytes:
    """Arguments of one job as one pickle; raises ValueError when they cannot be pickled."""
    data, _ = pack_job_args(args, kwargs, oob_min=1 << 62)
    return data


def pack_job_args(args: tuple, kwargs: dict, oob_min: int = ARGS_OOB_MIN
                  ) -> tuple[bytes, list | None]:
    """Arguments of one job: (pickle, its out-of-band buffers or None); raises
    ValueError when they cannot be pickled."""
    if all(type(v) in _PLAIN or (type(v) in _BYTES and len(v) < oob_min)
           for v in (*args, *kwargs.values())):
        # nothing for cloudpickle or out of band: the C pickler is ~20x cheaper
        return pickle.dumps((args, kwargs), protocol=5), None
    for value in (*args, *kwargs.values()):
        if not isinstance(value, (int, float, str, bytes, bool, type(None))):
            ship_by_value(type(value))
    try:
        data, bufs = oob.dumps((args, kwargs), oob_min)
        return data, bufs or None
    except Exception as exc:
        raise ValueError(f"job arguments cannot be pickled: {_culprit(args, kwargs, exc)}"
                         ) from exc


def _culprit(args: tuple, kwargs: dict, exc: Exception) -> str:
    """Which argument could not be pickled, its type and why (for the user's log)."""
    named = [(f"argument {i + 1}", v) for i, v in enumerate(args)]
    named += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    for what, value in named:
        try:
            cloudpickle.dumps(value, protocol=5)
        except Exception as err:
            kind = type(value)
            return f"{what} is a {kind.__module__}.{kind.__qualname__}: {err}"
    return str(exc)


def job_dependencies(depends: list[Any]) -> tuple[bytes, list[FileSpec]]:
    """``dispy_job_depends`` of one job: pickled code objects and files to copy."""
    if not isinstance(depends, (list, tuple)):  # a lone path would be taken letter by letter
        raise ValueError(f"dispy_job_depends must be a list, not {type(depends).__name__}")
    names, files = dependencies(list(depends))
    try:
        return dumps_code(names)[0], files
    except Exception as exc:
        raise ValueError(f"dispy_job_depends cannot be shipped: {exc}") from exc
