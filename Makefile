# `make run` runs the bot on the embedded simulator; `make test` runs the suite; `make bench`
# measures; `make crash` SIGKILLs the bot 200 times on the simulator and checks nothing broke.
# Each target creates .venv if missing and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= config/config.example.json

.PHONY: run test test-fast bench crash sim clean

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(PY) trading_bot.py --config $(CONFIG)

sim: $(VENV)/.runtime
	$(PY) -m hyperliquid_sim --host 127.0.0.1 --port 8765

test: $(VENV)/.dev
	$(PY) -m pytest -q

test-fast: $(VENV)/.dev
	$(PY) -m pytest -q -m "not slow"

bench: $(VENV)/.dev
	$(PY) bench/run.py

# The long crash test: the bot SIGKILLed $(KILLS) times on the simulator, then checked (bench/crash.py).
KILLS ?= 200
crash: $(VENV)/.dev
	$(PY) bench/crash.py --kills $(KILLS)

clean:
	rm -rf $(VENV) .pytest_cache
