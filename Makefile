# Two commands do everything on a fresh machine (each sets itself up first, idempotently):
#   make demo   the offline demo on a real model: prepare → train → evaluate → merge on
#               recipes/smollm2-shop-demo.yaml (SmolLM2-135M-Instruct, built offline by set-up)
#   make test   the test suite
# And the quicker demo on a tiny random model: make demo-tiny (recipes/tiny-demo.yaml);
# preference training (DPO) on the real model: make demo-dpo (recipes/smollm2-dpo-demo.yaml);
# reinforcement training (GRPO, verifiable rewards) on the real model: make demo-grpo (recipes/smollm2-grpo-demo.yaml);
# make test-fast: the suite without real training runs and end-to-end notebook runs (minutes).
PY := .venv/bin/python

.PHONY: setup demo demo-tiny demo-dpo demo-grpo test test-fast
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

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow and not e2e"
