# The two commands of the README:
#   make demo   set up .venv (pinned, offline-capable) and run the whole demo pipeline with Snakemake
#   make test   set up .venv and run the test suite
# VENV can point elsewhere (e.g. a shared cache): make test VENV=~/.cache/raygen/venv
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.raygen-installed
CORES ?= all
# Test processes. Two, as on the 2-core CI machine: much of the suite waits (process start-up, SLURM's
# polling, the pipelines' serial stretches), so a second process fills the gaps. Each test file stays in
# one process (--dist loadfile), since a file's tests share one pipeline run. TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 2

.PHONY: demo test setup clean-results

# The venv's bin/ goes first on PATH: the rules run `python -m raygen <stage>` and DVC / MLflow calls
# must find the venv's interpreter and tools, not the system's.
demo: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" snakemake --cores $(CORES)

test: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

setup: $(STAMP)

# Reinstall when the lock or the project metadata changes.
$(STAMP): requirements.lock pyproject.toml
	bash scripts/setup_env.sh $(VENV)
	touch $(STAMP)

clean-results:
	rm -rf results logs benchmarks .snakemake/metadata
