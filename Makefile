# The two README commands: `make demo` and `make test`. Both create .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cxr-setup-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export NO_ALBUMENTATIONS_UPDATE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help setup demo lint test test-fast clean bench lock check-lock

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt requirements.lock scripts/setup_venv.sh scripts/tv_cpu_shim.py scripts/tv_cpu_shim_hook.py
	bash scripts/setup_venv.sh $(VENV)
	touch $(STAMP)

setup: $(STAMP)  ## create .venv (if missing) and install cxr with its dev extras (CPU-safe)

demo: $(STAMP)  ## synthetic CXR world -> dual-tower training -> retrieval metrics (CPU, a few minutes)
	bash scripts/demo.sh $(PY)

lint: $(STAMP)  ## ruff (F, I, B, UP; settings in pyproject.toml)
	$(PY) -m ruff check cxr tests benchmarks train.py eval.py

test: lint  ## ruff, then the whole test suite, offline
	$(PY) -m pytest tests

test-fast: $(STAMP)  ## tests not marked slow
	$(PY) -m pytest tests -m "not slow"

bench: $(STAMP)  ## run the benchmarks (see docs/benchmarks.md)
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

lock:  ## refresh requirements.lock from .venv (after changing dependencies; then re-measure the README numbers)
	$(PY) scripts/lock.py write

check-lock:  ## check that .venv holds exactly the versions of requirements.lock
	$(PY) scripts/lock.py check

clean:  ## remove run outputs (keeps .venv)
	rm -rf runs outputs .pytest_cache
