"""dispynode: the server that runs jobs on each compute machine."""
