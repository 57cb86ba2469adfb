# `make run` and `make test` do all set-up on a fresh machine: venv, install, migrate.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test migrate clean system-deps demo bench

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@# gunicorn runs its workers with PYTHONOPTIMIZE=2 (gunicorn.conf.py): their bytecode, made once here.
	$(PY) -OO -m compileall -q -j 0 $(VENV)/lib gateway
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(VENV)/bin/gateway db upgrade

run: migrate
	$(VENV)/bin/gunicorn -c gunicorn.conf.py wsgi:app

# Debian's nginx (for the test that puts the gateway behind it) and wrk (for `make bench`), when root.
system-deps:
	@if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ] || ! command -v wrk >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -q nginx-light wrk >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q nginx-light wrk >/dev/null 2>&1)) || \
	    echo "warning: could not install nginx-light and wrk"; \
	  else echo "note: nginx or wrk missing; the tests that need them skip (they fail when CI is set)"; fi; \
	fi

test: install system-deps
	$(PY) -m pytest -q

# Starts its own simulator, gunicorn, PostgreSQL database and Redis namespace; writes bench/results/report.md.
bench: install system-deps
	$(PY) bench/run.py
	$(PY) bench/ratelimit.py

demo: install
	$(PY) -m gateway.demo

clean:
	rm -rf $(VENV) instance *.egg-info
