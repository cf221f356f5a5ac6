# The two commands of the README:
#   make demo   set up .venv (pinned, offline-capable) and run the whole demo pipeline with Snakemake
#   make test   set up .venv and run the test suite
# VENV can point elsewhere (e.g. a shared cache): make test VENV=~/.cache/raygen/venv
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.raygen-installed
CORES ?= all

.PHONY: demo test setup clean-results

demo: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES)

test: $(STAMP)
	$(PY) -m pytest -q

setup: $(STAMP)

# Reinstall when the lock or the project metadata changes.
$(STAMP): requirements.lock pyproject.toml
	bash scripts/setup_env.sh $(VENV)
	touch $(STAMP)

clean-results:
	rm -rf results logs benchmarks .snakemake/metadata
