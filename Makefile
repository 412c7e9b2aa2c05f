# Two commands from a fresh clone: `make gameday` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install gameday check test test-optional-parts test-fast bench lab-up lab-down lab-status clean

# the combinations of optional parts the README allows besides the machine's own: Prometheus only, neither
# (GAMEDAY_LAB_WITHOUT makes the lab pretend a part is missing without uninstalling it)
HIDDEN_PARTS := alertmanager prometheus,alertmanager

help:
	@echo "make gameday   run GAMEDAY-001 headless against the embedded lab (rehearsal profile)"
	@echo "make check     ruff and mypy on gamedaylib (0 findings; make test runs it first)"
	@echo "make test      run every test (pytest, notebook validation included), then the optional-parts ones"
	@echo "               again with Alertmanager hidden and with both parts hidden"
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

check: $(STAMP)
	$(BIN)/ruff check gamedaylib
	$(BIN)/mypy gamedaylib

test: $(STAMP) check
	$(BIN)/python -m pytest tests notebooks --nbval-lax -p no:cacheprovider
	$(MAKE) test-optional-parts

test-optional-parts: $(STAMP)
	@for hidden in $(HIDDEN_PARTS); do \
	  echo "== GAMEDAY_LAB_WITHOUT=$$hidden: the tests marked optional_parts"; \
	  GAMEDAY_LAB_WITHOUT=$$hidden $(BIN)/python -m pytest tests -m optional_parts -p no:cacheprovider || exit 1; \
	done

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
	rm -rf $(VENV) .gameday .mypy_cache .ruff_cache
