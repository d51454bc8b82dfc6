# Two commands for a new user: `make demo` and `make test`. Both set up .venv first (idempotent).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= demo
LAB_ARGS ?=

.PHONY: setup demo test test-fast lab bench clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt 'setuptools>=61'
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m fbhelpers demo --profile $(PROFILE)

# The browser tier (tests/test_browser.py) needs Chromium; without it pytest skips it and -rs prints why.
test: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || test -n "$$FB_CHROMIUM" || \
		echo "make test: no Chromium found: the browser tier will be SKIPPED (apt-get install -y chromium)"
	$(PY) -m pytest -q -rs -p no:cacheprovider

# The inner loop: the unit tier only (no notebooks, browser, claims, DDP or slow tests); docs/testing.md.
test-fast: $(STAMP)
	$(PY) -m pytest -m unit -q -rs -p no:cacheprovider

# JupyterLab on 127.0.0.1 in notebooks/, with the project's kernel (python3 in .venv); LAB_ARGS="--no-browser" etc.
# As root (a container), JupyterLab needs --allow-root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
lab: $(STAMP)
	cd notebooks && ../$(VENV)/bin/jupyter lab --ServerApp.ip=127.0.0.1 $(ROOT_FLAG) $(LAB_ARGS)

bench: $(STAMP)
	$(PY) -m fbhelpers bench

clean:
	rm -rf $(VENV) runs build *.egg-info
