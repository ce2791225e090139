# Two commands a newcomer needs: `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# torch/torchvision: the releases whose wheels lie on disk here; from PyPI elsewhere.
TORCH   := torch==2.14.1 torchvision==0.29.1
STAMP   := $(VENV)/.installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test,ray]'
	touch $(STAMP)

install: $(STAMP)

PBC     ?= ../shared/data/pbc

# The main job: evaluate the shipped model on the Kaggle originals and official TEST split, and on the PBC test set.
demo: $(STAMP)
	$(BIN)/wbc evaluate --split TEST_SIMPLE --split TEST --out reports/demo --json reports/demo/metrics.json
	@if [ -d $(PBC)/test ]; then $(BIN)/wbc evaluate --data $(PBC) --split TEST --out reports/demo/pbc --json reports/demo/pbc.json; \
	else echo "no PBC data at $(PBC): its evaluation skipped (make demo PBC=DIR)"; fi

# Test files run two at a time (pytest-xdist, a file to a process); the fuzzers after, alone (their request counts).
# The 25 slowest tests are listed: CI must stay well under 30 minutes on 2 cores.
WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile -m "not serial" --durations=25
	$(BIN)/python -m pytest -q -m serial

clean:
	rm -rf $(VENV) reports .pytest_cache
