"""The benchmark's own environments under benchmarks/.envs/ (one venv per peer system)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ENVS = HERE / ".envs"

# what each peer's venv gets from PyPI, and a module that proves it imports
SPECS: dict[str, tuple[list[str], str]] = {
    "orig": (["dispy==4.15.2", "psutil"], "dispy"),
    "dask": (["dask[distributed]"], "distributed"),
    "ray": (["ray"], "ray"),
}


@dataclass
class Env:
    name: str
    python: Path | None
    reason: str = ""  # why python is None


def project_python() -> Path:
    """This project's venv (``make setup``); the interpreter running us otherwise."""
    venv = ROOT / ".venv" / "bin" / "python"
    return venv if venv.exists() else Path(sys.executable)


def ensure(name: str, reinstall: bool = False, log=print) -> Env:
    """The venv for ``name``, created and installed on first use (or skipped with a reason)."""
    if name in ("ours", "shared", "pool"):
        return Env(name, project_python())
    packages, module = SPECS[name]
    venv = ENVS / name
    stamp = venv / ".bench-installed"
    failed = ENVS / f"{name}.failed"
    want = " ".join(packages)
    if reinstall:
        shutil.rmtree(venv, ignore_errors=True)
        failed.unlink(missing_ok=True)
    if stamp.exists() and stamp.read_text().strip() == want:
        return Env(name, venv / "bin" / "python")
    if failed.exists():
        return Env(name, None, f"install failed earlier (see {failed}; --reinstall retries)")
    ENVS.mkdir(exist_ok=True)
    log(f"[setup] creating {venv.relative_to(ROOT)} with: {want} (once; this takes a while)")
    out = ENVS / f"{name}.log"
    steps = [[sys.executable, "-m", "venv", "--clear", str(venv)],
             [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *packages],
             [str(venv / "bin" / "python"), "-c", f"import {module}"]]
    with open(out, "w") as fh:
        for step in steps:
            fh.write(f"$ {' '.join(step)}\n")
            fh.flush()
            try:
                rc = subprocess.run(step, stdout=fh, stderr=subprocess.STDOUT, timeout=1800,
                                    stdin=subprocess.DEVNULL).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
            if rc != 0:
                lines = out.read_text(errors="replace").strip().splitlines()
                tail = [ln for ln in lines if "ERROR" in ln][-3:] or lines[-3:]
                reason = f"`{' '.join(step[-3:])}` failed ({rc}): " + " | ".join(tail)
                failed.write_text(reason + "\n")
                log(f"[setup] {name}: {reason}")
                return Env(name, None, reason)
    stamp.write_text(want + "\n")
    return Env(name, venv / "bin" / "python")
