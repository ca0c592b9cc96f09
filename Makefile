# Two commands do everything on a fresh machine (each sets itself up first, idempotently):
#   make demo   the offline demo: prepare → train → evaluate → merge on recipes/tiny-demo.yaml
#   make test   the test suite
PY := .venv/bin/python

.PHONY: setup demo test
setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m kit.pipeline tiny-demo

test: setup
	$(PY) -m pytest
