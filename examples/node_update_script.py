"""The program ``node_update.py`` runs once on every node (a stand-in for real maintenance).

A real one might install a package or refresh a data set. This one reports where and
how it ran: node name (first argument), Python version, platform and working directory.
It runs on the node as a separate program, with the node's Python.
"""

import os
import platform
import sys

if __name__ == "__main__":
    node_name = sys.argv[1] if len(sys.argv) > 1 else "?"
    print(f"updated {node_name}: python {platform.python_version()} on {platform.system()}"
          f" {platform.machine()} in {os.getcwd()}")
    sys.exit(0)
