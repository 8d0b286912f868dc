"""A job's status numbers: the original dispy's, as they travel in frames and as
``DispyJob`` names them (``DispyJob.Finished`` is ``FINISHED``). Defined here once for
the client, the node, dispyscheduler and the scheduling core."""

CREATED = 5
RUNNING = 6
PROVISIONAL = 7
CANCELLED = 8
TERMINATED = 9
ABANDONED = 10
FINISHED = 11
