# Two commands from a fresh clone: `make gameday` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install gameday test test-fast bench lab-up lab-down lab-status clean

help:
	@echo "make gameday   run GAMEDAY-001 headless against the embedded lab (rehearsal profile)"
	@echo "make test      run every test (pytest, notebook validation included)"
	@echo "make bench     run the benchmarks and print their figures"
	@echo "make lab-up / lab-status / lab-down   keep a lab running for a live session"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

gameday: $(STAMP)
	$(BIN)/gameday run

test: $(STAMP)
	$(BIN)/python -m pytest tests notebooks --nbval-lax -p no:cacheprovider

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow and not browser" -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

lab-up: $(STAMP)
	$(BIN)/gameday lab up

lab-status: $(STAMP)
	$(BIN)/gameday lab status

lab-down: $(STAMP)
	$(BIN)/gameday lab down

clean:
	-$(BIN)/gameday lab down 2>/dev/null
	rm -rf $(VENV) .gameday
