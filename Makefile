# `make run` and `make test` do all set-up on a fresh machine: venv, install, migrate.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test migrate clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(VENV)/bin/gateway db upgrade

run: migrate
	$(VENV)/bin/gunicorn -c gunicorn.conf.py wsgi:app

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) instance *.egg-info
