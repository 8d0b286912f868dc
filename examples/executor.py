"""dispy.Executor: the concurrent.futures interface over dispy nodes. Any function can be
submitted (it is shipped once per node, not per call); exceptions come back as
themselves.

Nodes: ``DISPY_NODES`` (comma-separated hosts, default ``*``) and ``DISPY_NODE_PORT``.
"""

import concurrent.futures as cf
import os

import dispy


def collatz_steps(n):
    steps = 0
    while n != 1:
        n = 3 * n + 1 if n % 2 else n // 2
        steps += 1
    return steps


if __name__ == "__main__":
    nodes = os.environ.get("DISPY_NODES", "*").split(",")
    node_port = int(os.environ.get("DISPY_NODE_PORT", "51348"))

    with dispy.Executor(nodes=nodes, node_port=node_port, port=0) as executor:
        futures = {executor.submit(collatz_steps, n): n for n in (27, 97, 871)}
        for fut in cf.as_completed(futures):
            print(f"collatz_steps({futures[fut]}) = {fut.result()}")

        # 1000 calls in jobs of 100, with a progress bar on stderr
        steps = list(executor.map(collatz_steps, range(1, 1001), chunksize=100,
                                  progress=True))
        print("longest below 1000:", max(range(1000), key=steps.__getitem__) + 1)

        scale = 10  # closures and lambdas work too
        print("lambda:", executor.submit(lambda x: x * scale, 4).result())
        try:
            executor.submit(int, "not a number").result()
        except ValueError as exc:
            print("remote ValueError:", exc)
