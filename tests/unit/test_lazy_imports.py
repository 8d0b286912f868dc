"""What a program imports only when it uses it: ``dispy``'s client names, each with
only what it needs, and AES-GCM (for big records only)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=50).stdout


def test_jobcluster_does_not_import_the_rest() -> None:
    out = _run("import sys, dispy; dispy.JobCluster\n"
               "from dispy.client.job import FUTURE_HOOKS\n"
               "print(sorted(FUTURE_HOOKS))\n"
               "print([m for m in ('dispy.sshstart', 'dispy.client.shared', "
               "'dispy.client.recover', 'dispy.client.executor', 'argparse', 'dispy.node')"
               " if m in sys.modules])")
    hooks, loaded = out.splitlines()
    assert hooks == "['future_of', 'settle', 'wait_job']"  # job.future works at once
    assert loaded == "[]"


def test_a_computation_host_imports_no_asyncio() -> None:
    """The spare interpreter a node keeps ready (and the job processes it forks) import
    no event loop: its import competes with the node's jobs for the CPUs."""
    out = _run("import sys, dispy.node.host, dispy.node.jobproc, dispy.node.lanes\n"
               "print([m for m in ('asyncio', 'dispy.wire.connection') if m in sys.modules])")
    assert out.strip() == "[]"


def test_dir_lists_names_not_loaded_yet_and_direct_imports_get_future_hooks() -> None:
    out = _run("import sys, dispy\n"
               "print('SSHNodes' in dir(dispy), 'dispy.sshstart' in sys.modules)\n"
               "import dispy.client.recover\n"
               "from dispy.client.job import FUTURE_HOOKS\n"
               "print(sorted(FUTURE_HOOKS))\n")
    names, hooks = out.splitlines()
    assert names == "True False"  # tab completion sees every name, and loads none
    assert hooks == "['future_of', 'settle', 'wait_job']"


def test_every_name_loads_and_star_import_gives_all() -> None:
    import dispy

    out = _run("from dispy import *\nimport dispy\n"
               "print(all(getattr(dispy, n) is globals()[n] for n in dispy.__all__))")
    assert out.strip() == "True"
    with pytest.raises(AttributeError):
        dispy.NoSuchName  # noqa: B018


def test_aes_gcm_loads_with_the_first_big_record() -> None:
    out = _run("import sys, dispy; dispy.JobCluster\n"
               "from dispy.wire import codec\n"
               "print('cryptography' in sys.modules)\n"
               "key = bytes(32)\n"
               "sealer, opener = codec.Sealer(key), codec.FrameDecoder()\n"
               "opener.seal(key, codec.FULL)\n"
               "small = codec.encode({'op': 'x'}, [b'y' * 100])\n"
               "for piece in sealer.seal(list(small)):\n"
               "    opener.feed(bytes(piece))\n"
               "print('cryptography' in sys.modules)\n"
               "big = codec.encode({'op': 'x'}, [b'z' * codec.GMAC_MIN])\n"
               "for piece in sealer.stream(list(big), sum(map(len, big))):\n"
               "    opener.feed(bytes(piece))\n"
               "print('cryptography' in sys.modules, len(opener.frames))\n")
    assert out.split() == ["False", "False", "True", "2"]
