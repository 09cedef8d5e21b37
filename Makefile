# One Time Chat. `make demo` and `make test` work on a fresh machine: they
# create .venv and install the project with what they need.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
OTC    := $(VENV)/bin/otc
STAMP  := $(VENV)/.installed-test

.PHONY: demo test bench lint clean venv screenshots image image-test

venv: $(STAMP)

$(STAMP): setup.py pyproject.toml
	@bash scripts/ensure-venv.sh "$(PYTHON)" "$(VENV)"
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[device,relay,postgres,test,dev]'
	@touch $@

demo: $(STAMP)
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

test: lint
	@bash scripts/ensure-test-deps.sh
	$(PY) -m pytest -m "not hardware" $(PYTEST_ARGS)

bench: $(STAMP)
	@bash scripts/ensure-test-deps.sh
	@set -e; for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b; done

# Every screen of the device's touchscreen, with realistic content, as PNGs (SDL's dummy driver: no display needed).
screenshots: $(STAMP)
	SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy $(PY) scripts/screenshots.py docs/screenshots

# The Raspberry Pi 3/4 SD-card image, from Debian bookworm packages (image/build.sh; root, about
# 10 to 15 minutes, downloads cached in ~/.cache/onetimechat-image), and its boot test under QEMU.
# Neither is part of `make test`, which checks the recipe's parts that need no build.
image: $(STAMP)
	PY="$(CURDIR)/$(PY)" bash image/build.sh

image-test: $(STAMP)
	PY="$(CURDIR)/$(PY)" bash image/test.sh

# ruff; mypy over every module; the import-linter contracts of the layers (.importlinter, docs/architecture.md).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
