# Two entry points on a fresh machine: `make demo` (the whole loop, locally) and `make test`.
# Both create the virtualenv and install what they need on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: test unit integration e2e demo crds envtest cluster-pieces cluster-test bytecode clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,demo]'
	touch $(STAMP)

# Byte-compile up front: Python 3.11 before 3.11.8 can raise a spurious
# "AST constructor recursion depth mismatch" when two threads compile source
# at once (a test's operator thread importing lazily while pytest rewrites).
bytecode: $(STAMP)
	$(PY) -m compileall -q operator tests

envtest:
	bash hack/envtest/build.sh
	bash hack/helm/build.sh
	bash hack/monitoring/build.sh

# The one-node cluster of tests/cluster: Debian packages (installed if
# missing, needs root), kubelet/kube-scheduler/kube-proxy, the base image and
# the project's image. Each step is cached outside the repository.
cluster-pieces:
	bash hack/cluster/packages.sh
	bash hack/cluster/build.sh
	bash hack/cluster/image.sh

# Only the one-node cluster tests (opted out of a plain `pytest tests`).
cluster-test: $(STAMP) cluster-pieces bytecode
	bash hack/envtest/build.sh
	MLOPS_CLUSTER_TESTS=1 $(PY) -m pytest -q tests/cluster

test: $(STAMP) envtest bytecode
	$(VENV)/bin/mlops-operator crds --check
	bash hack/helm/sync-crds.sh --check
	$(PY) -m pytest -q tests

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: $(STAMP) envtest
	$(PY) -m pytest -q tests/integration tests/chart

e2e: $(STAMP)
	$(PY) -m pytest -q tests/e2e

demo: $(STAMP)
	$(VENV)/bin/mlops-operator demo --out out/demo

crds: $(STAMP)
	$(VENV)/bin/mlops-operator crds
	bash hack/helm/sync-crds.sh

clean:
	rm -rf $(VENV) out .pytest_cache
