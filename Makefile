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
# missing), kubelet/kube-scheduler/kube-proxy, the base image and the
# project's image. Each step is cached outside the repository. It needs root;
# without it (or with MLOPS_CLUSTER_TESTS=0) the cluster tests are skipped and
# say why.
cluster-pieces:
	@if [ "$$(id -u)" = 0 ] && [ "$${MLOPS_CLUSTER_TESTS:-1}" != 0 ]; then \
	  bash hack/cluster/packages.sh && bash hack/cluster/build.sh && bash hack/cluster/image.sh; \
	else echo "cluster pieces: skipped (needs root; MLOPS_CLUSTER_TESTS=$${MLOPS_CLUSTER_TESTS:-unset})"; fi

# Only the one-node cluster tests.
cluster-test: $(STAMP) cluster-pieces bytecode
	bash hack/envtest/build.sh
	bash hack/helm/build.sh
	$(PY) -m pytest -q -rs tests/cluster

# Everything, the one-node cluster's tests last (tests/cluster/conftest.py).
test: $(STAMP) envtest cluster-pieces bytecode
	$(VENV)/bin/mlops-operator crds --check
	bash hack/helm/sync-crds.sh --check
	$(PY) -m pytest -q -rs tests

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
