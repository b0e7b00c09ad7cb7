# msc — the two commands: `make run` (the demo switch) and `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

# Debian tools some tests use: sslscan (TLS scan), promtool (metrics and alert rules),
# fiu-run (disk-fault injection), the PostgreSQL server (tests/pg.py: throw-away clusters; Debian keeps
# its programs in /usr/lib/postgresql/<version>/bin, off PATH, so the check is a glob that the shell
# expands), chromium (the web console's browser tests, driven by Playwright; no browser is ever
# downloaded). Installed when missing and possible; tests skip with a reason otherwise.
SYSTEM_TOOLS := sslscan:sslscan promtool:prometheus fiu-run:fiu-utils /usr/lib/postgresql/*/bin/postgres:postgresql chromium:chromium

FUZZ_SECONDS ?= 600
CRASH_ITERATIONS ?= 20

BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: run test lint venv clean system-deps fuzz crash bench soak ha-deps ha-soak

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

# make run DEMO_DIR=var2 PORT_OFFSET=1000: a second demo beside one on the default ports
# (the offset applies when DEMO_DIR's demo is created; afterwards its msc.toml says the ports).
DEMO_DIR ?= var
PORT_OFFSET ?= 0
run: $(STAMP)
	@command -v oathtool >/dev/null 2>&1 || $(MAKE) --no-print-directory SYSTEM_TOOLS="oathtool:oathtool" system-deps
	$(BIN)/msc demo --dir $(DEMO_DIR) --port-offset $(PORT_OFFSET)

# pytest's own exit status fails the target: 1 for a failed test, 5 when no test ran.
# TEST_WORKERS processes (pytest-xdist), each taking whole files (module fixtures stay shared):
# the suite mostly waits on servers and clocks, so 2 on 2 cores cut its time; TEST_WORKERS=0 runs
# it in this one process. Ports come from tests/ports.py, so workers never race for one.
TEST_WORKERS ?= 2
test: $(STAMP) system-deps lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# The architecture's walls and the code's hygiene (pyproject.toml; tests/architecture runs them too).
lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

system-deps:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if [ "$$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian packages:$$missing"; \
	    ($$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing) >/dev/null \
	      || echo "warning: could not install$$missing; the tests that need them will be skipped"; \
	  else echo "warning: cannot install$$missing (not root, no sudo or no apt-get); the tests that need them will be skipped"; fi; \
	fi

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

# Benchmarks beside their same-run baselines (direct path, NATS JetStream with and without fsync).
bench: $(BENCH_STAMP)
	@command -v /usr/sbin/nats-server >/dev/null 2>&1 || $(MAKE) --no-print-directory SYSTEM_TOOLS="/usr/sbin/nats-server:nats-server" system-deps
	$(BIN)/python bench/run_bench.py

# 30 minutes of load with faults on a schedule (kill -9, upstream loss, reloads): availability.
soak: $(BENCH_STAMP)
	$(BIN)/python bench/soak.py --minutes $${SOAK_MINUTES:-30}

# The high-availability tooling (not part of make test): Debian's Patroni, etcd and PostgreSQL for the
# example 3 etcd + 3 PostgreSQL cluster in config/patroni/ (and tests/integration/test_patroni_validate.py).
HA_TOOLS := patroni:patroni etcd:etcd-server etcdctl:etcd-client /usr/lib/postgresql/*/bin/postgres:postgresql
ha-deps:
	@$(MAKE) --no-print-directory SYSTEM_TOOLS="$(HA_TOOLS)" system-deps

# Two msc nodes on a PostgreSQL journal under Patroni (3 etcd + 3 PostgreSQL, loopback), a fault every
# minute (kill -9 of the active node, kill -9 of the PostgreSQL primary's host, SIGSTOP of the active):
# availability by time, failover times, acknowledged-but-lost and duplicated OSNs (bench/results/ha-soak-*).
ha-soak: $(BENCH_STAMP) ha-deps
	$(BIN)/python bench/ha_soak.py --minutes $${HA_SOAK_MINUTES:-10}

# 10 minutes of coverage-guided fuzzing of the protocol codec; discoveries go to var/fuzz/corpus.
fuzz: $(STAMP)
	mkdir -p var/fuzz/corpus
	$(BIN)/python tests/fuzz/fuzz_protocol.py var/fuzz/corpus tests/fuzz/corpus \
	    -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=var/fuzz/ 2>&1 | tee var/fuzz/last-run.log | grep -E "DONE|stat::|crash|ERROR"

# kill -9 of msc serve at random points under load, CRASH_ITERATIONS times (make test does 3).
crash: $(STAMP)
	MSC_CRASH_ITERATIONS=$(CRASH_ITERATIONS) $(BIN)/python -m pytest tests/e2e/test_crash_loop.py -q -s

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis .mypy_cache .ruff_cache .import_linter_cache
