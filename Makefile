# The two commands a newcomer types: `make demo` and `make test`.
# Both create .venv if missing and install what they need (quick the second time).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fer_dist-installed
DEMO   ?= demo
# pytest arguments, e.g. `make test PYTEST_ARGS="-k lars"`
PYTEST_ARGS ?=

.PHONY: demo test venv slurm-deps clean

venv: $(STAMP)

$(STAMP): setup.cfg setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: newer wheels are not wanted (and not on disk here)
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# Debian's slurm-wlm + munge for the Slurm tests (needs root and apt-get; skipped with a
# message otherwise, and the Slurm tests then skip with that reason).
slurm-deps:
	bash slurm/local-cluster/install.sh

demo: $(STAMP)
	bash scripts/demo.sh "$(DEMO)"

test: $(STAMP) slurm-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(DEMO) runs .pytest_cache
