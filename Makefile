# Two commands do all set-up on a fresh machine: `make test` and `make demo`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages the tests and the demo use (iproute2 for namespaces, tc and
# ip; iperf3 and irtt to compare against; openssh for the ssh launcher;
# ethtool to turn offloads off in rigs; rsync for `ray up`, which copies the
# checkout to the cluster hosts; chromium to check that the report pages draw
# offline; tcpdump to see on the wire how packets are marked).
APT_PACKAGES := iproute2 iptables iperf3 irtt iputils-ping procps openssh-server openssh-client ethtool rsync chromium tcpdump

.PHONY: test science demo lint typecheck unit bench deps clean reliability

# The tests, but the long science and cluster checks (marker `science`, about
# 20 minutes more): `make test` stays under 20 minutes; `make science` runs those.
test: deps lint typecheck
	$(PY) -m pytest -q -p no:cacheprovider -m "not science" $(PYTEST_ARGS)

science: deps
	$(PY) -m pytest -q -p no:cacheprovider -m science $(PYTEST_ARGS)

demo: deps
	$(VENV)/bin/antler-ray run +experiment=cubic

deps: $(STAMP) .apt-stamp

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# apt-get only when something is missing, so a warm machine starts at once.
.apt-stamp:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@touch .apt-stamp

lint: deps
	$(VENV)/bin/ruff check antler tests bench
	$(VENV)/bin/ruff format --check antler tests bench

typecheck: deps
	$(VENV)/bin/mypy antler tests bench

# The reliability tests at their long counts (200 stream clients, 50 packet
# flows, ~100,000 fuzzed datagrams; ~15 min), then docs/reliability.md
# from the figures they record (tests/lab/figures.py), written even when a test
# fails (the page says which); the status is the tests'.
reliability: deps
	@mkdir -p docs; figures=$$(mktemp --suffix=.jsonl); \
	ANTLER_RELIABILITY_LONG=1 ANTLER_RELIABILITY_FIGURES=$$figures $(PY) -m pytest -q -p no:cacheprovider \
	  tests/test_leaks.py tests/test_reclaim.py tests/test_interrupt.py tests/test_incremental.py \
	  tests/test_terminal.py tests/test_hangs.py tests/test_config_property.py tests/test_fuzz.py \
	  tests/test_load.py tests/test_secrets.py $(PYTEST_ARGS); status=$$?; \
	$(PY) -m tests.lab.reliability_report $$figures > docs/reliability.md && rm -f $$figures; \
	echo "docs/reliability.md written"; exit $$status

bench: deps
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) .apt-stamp
