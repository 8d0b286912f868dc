VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
#: pytest workers: tests wait on daemons and timers more than they compute
TEST_WORKERS ?= 2

.PHONY: setup demo test lint bench soak clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy src
	$(PY) -m pytest -q -n $(TEST_WORKERS) tests

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy src

# Benchmarks (not part of `make test`): sets up benchmarks/.envs on first use.
# make bench ARGS="--quick" for a smoke run; benchmarks/README.md lists the options.
# Then the client, and a program through dispyscheduler, against 10, 100 and 1 000
# simulated nodes (scale.py, SCALE_ARGS), and the client's CPU per job at 1 000 nodes
# over 10 in rounds run in turn (also with the simulator on a CPU of its own); last,
# the floor of a round trip (direct_path.py).
bench: $(STAMP)
	$(PY) benchmarks/bench.py $(ARGS)
	$(PY) benchmarks/scale.py $(SCALE_ARGS)
	$(PY) benchmarks/scale.py --via scheduler $(SCALE_ARGS)
	$(PY) benchmarks/scale.py --nodes 10,1000 --ratio 5
	$(PY) benchmarks/scale.py --nodes 10,1000 --ratio 5 --pin
	$(PY) benchmarks/core.py
	$(PY) benchmarks/direct_path.py

# Fault-tolerance soaks: 20 000 jobs of a JobCluster over 3 nodes while a killer restarts
# nodes; then 20 000 jobs of two programs through dispyscheduler while it kills and
# restarts nodes, the scheduler and the programs (benchmarks/chaos.py).
soak: $(STAMP)
	$(PY) benchmarks/soak.py $(ARGS)
	$(PY) benchmarks/chaos.py $(ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info
