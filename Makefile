# Two commands do everything on a fresh machine (each sets itself up first, idempotently):
#   make demo   the offline demo on a real model: prepare → train → evaluate → merge on
#               recipes/smollm2-shop-demo.yaml (SmolLM2-135M-Instruct, built offline by set-up)
#   make test   the test suite
# And the quicker demo on a tiny random model: make demo-tiny (recipes/tiny-demo.yaml);
# preference training (DPO) on the real model: make demo-dpo (recipes/smollm2-dpo-demo.yaml);
# reinforcement training (GRPO, verifiable rewards) on the real model: make demo-grpo (recipes/smollm2-grpo-demo.yaml);
# make test-fast: the suite without real training runs and end-to-end notebook runs (minutes);
# make lint: ruff format --check and ruff check (both test commands run it first).
PY := .venv/bin/python

.PHONY: setup demo demo-tiny demo-dpo demo-grpo test test-fast lint
setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m kit.pipeline smollm2-shop-demo

demo-tiny: setup
	$(PY) -m kit.pipeline tiny-demo

demo-dpo: setup
	$(PY) -m kit.pipeline smollm2-dpo-demo

demo-grpo: setup
	$(PY) -m kit.pipeline smollm2-grpo-demo

test: setup lint
	$(PY) -m pytest

test-fast: setup lint
	$(PY) -m pytest -m "not slow and not e2e"

# The formatter and the linter (ruff, settings in pyproject.toml): part of both test commands.
lint: setup
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
