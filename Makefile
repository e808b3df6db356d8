# The two commands of the README.  Each does all its own set-up on a fresh
# clone: a virtualenv in .venv with the project and its test extras.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## make demo: the main job on the embedded default (SQLite file peerledger.db)
demo: $(STAMP)
	$(VENV)/bin/peerledger demo

## make test: every test, against SQLite and the local PostgreSQL, on two
## workers (each test has its own SQLite file and PostgreSQL database)
test: $(STAMP)
	scripts/ensure-postgres
	scripts/ensure-chromium
	$(PY) -m pytest -n 2

## make bench: the ingest/replay benchmark (writes bench/results/)
bench: $(STAMP)
	scripts/ensure-postgres
	$(PY) bench/ingest_bench.py

clean:
	rm -rf $(VENV) peerledger.db peerledger.db-wal peerledger.db-shm peerledger.db.lock peerledger.db.locks .pytest_cache .hypothesis
