"""The computations every system runs (kept tiny: some systems ship this module by value)."""


def noop(x):
    """A job that does nothing but return its argument."""
    return x


def busy(n):
    """A pure-Python busy loop of ``n`` iterations; returns (sum, CPU seconds it took)."""
    import time

    t0 = time.process_time()
    s = 0
    for i in range(n):
        s += i
    return s, time.process_time() - t0


def echo(data):
    """Return the argument unchanged (so the result is as large as the argument)."""
    return data
