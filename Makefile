# Set-up and everyday commands. `make quickstart` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install quickstart test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The supervised positive/null controls, an SSL (SimCLR) pair beside them, then the VLM
# (CLIP-style) study: ~9 min on 2 cores.
quickstart: install
	$(BIN)/dejavu run configs/quickstart.yaml
	$(BIN)/dejavu run configs/demo-ssl.yaml
	$(BIN)/dejavu run configs/quickstart-vlm.yaml

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/stage_times.py
	$(BIN)/python benchmarks/knn_bench.py
	$(BIN)/python benchmarks/clip_bench.py

clean:
	rm -rf runs .pytest_cache
