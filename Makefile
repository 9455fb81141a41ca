# Two commands on a fresh machine: `make demo` and `make test`. Everything else is set up here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
SYSTEM := $(VENV)/.system
NOTEBOOK := $(VENV)/.notebook
KUBECTL := $(VENV)/.kubectl
N ?= 1000000
REPORT ?= .fraud-rollout/demo/pipeline/report.json

.PHONY: demo notebook test lint bench bench-pipeline bench-replay bench-serving bench-rollout compile venv system cluster cluster-down go-servers images lock clean

demo: $(INSTALLED)
	$(BIN)/fraud-rollout demo

# The Go servers (CPU-bound) build while the images (network and disk) and lint run: on a fresh
# 2-core machine that overlap is several minutes of the 60-minute budget.
# The suite runs in random order (pytest-random-order): modules shuffled, and tests within each
# module, so no test can rely on another having run; a module's tests stay together, so its module
# fixtures are built once. The seed is printed first (pytest -q hides the plugin's header): replay an
# order with `make test SEED=N`. Here, not in pyproject's addopts: `pytest path::test`, -x and --ff
# runs keep the file order.
SEED ?=
test: $(SYSTEM)
	$(MAKE) --no-print-directory -j 3 lint go-servers images
	@seed=$(SEED); seed=$${seed:-$$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')}; \
	  echo "test order: --random-order-seed=$$seed (make test SEED=$$seed runs this order again)"; \
	  echo "$(BIN)/pytest -q --random-order --random-order-seed=$$seed --durations=25"; \
	  $(BIN)/pytest -q --random-order --random-order-seed=$$seed --durations=25

# Layers (import-linter contracts in pyproject.toml), lint and types: part of `make test`.
lint: $(INSTALLED)
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check .
	$(BIN)/mypy

# Benchmarks print measured numbers next to their targets. bench-replay and bench-serving use the
# models of a pipeline run (REPORT, written by `make demo` or `make bench-pipeline`).
bench: bench-pipeline bench-replay bench-serving bench-rollout

bench-pipeline: $(INSTALLED)
	$(BIN)/fraud-rollout bench pipeline --n-transactions $(N)

bench-replay: $(INSTALLED) $(SYSTEM)
	$(BIN)/fraud-rollout bench replay --report $(REPORT)

bench-serving: $(INSTALLED) $(SYSTEM)
	$(BIN)/fraud-rollout bench serving --report $(REPORT)

# The rollout policy's operating characteristics: simulated rollouts through the real decision code.
bench-rollout: $(INSTALLED)
	$(BIN)/fraud-rollout bench rollout

compile: $(INSTALLED)
	$(BIN)/fraud-rollout pipeline compile

venv: $(INSTALLED)

# Locked Python dependencies into .venv (uv installs the lock exactly; the project itself editable).
# Bytecode is compiled at install: with PYTHONDONTWRITEBYTECODE set, every server start would
# otherwise compile kserve and TensorFlow from source.
$(INSTALLED): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv==0.13.9
	$(BIN)/uv pip sync -q --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

# kubectl, which the README's commands and `make cluster` use: a fresh machine of this kind ships
# one; where it does not, Debian's kubernetes-client provides it.
$(KUBECTL): | $(INSTALLED)
	command -v kubectl >/dev/null || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends kubernetes-client; }
	command -v kubectl >/dev/null || { echo "missing kubectl" >&2; exit 1; }
	touch $@

# Debian packages the tests use: Prometheus (promtool, a real scrape), wrk (load for benchmarks),
# PostgreSQL (the prediction store; Debian keeps its server binaries in /usr/lib/postgresql/<version>/bin,
# off PATH) and podman, buildah, mmdebstrap, runc (the images). Every tool is checked after:
# missing fails here.
$(SYSTEM): $(KUBECTL) | $(INSTALLED)
	command -v promtool >/dev/null && command -v wrk >/dev/null && \
	  command -v podman >/dev/null && command -v buildah >/dev/null && command -v mmdebstrap >/dev/null && \
	  command -v runc >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	      prometheus wrk postgresql podman buildah mmdebstrap runc uidmap fuse-overlayfs; }
	for tool in promtool prometheus wrk kubectl podman buildah mmdebstrap runc; do \
	  command -v $$tool >/dev/null || { echo "missing $$tool" >&2; exit 1; }; done
	pg=$$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1); \
	  for tool in initdb postgres pg_isready; do test -x "$$pg/$$tool" || { echo "missing PostgreSQL $$tool (in /usr/lib/postgresql/*/bin)" >&2; exit 1; }; done
	touch $@

system: $(SYSTEM)

# The third-party servers of the loopback cluster (kube-apiserver, etcd, KServe's controller
# manager, MinIO, Argo Rollouts' controller), built from their Go modules at the versions
# fraud_devcluster/versions.py pins, once: binaries are cached in ~/.cache/fraud-rollout/go (a
# fresh 2-core machine: about 14 minutes for all six beside the image builds, measured).
go-servers: $(INSTALLED)
	$(BIN)/python -m fraud_devcluster.gobuild

# The components and serving images (podman/buildah on a Debian base made by mmdebstrap; no Docker
# daemon), tagged <REGISTRY>/<name>:<version>-<hash of their inputs> and built only when that tag
# is missing. `make images REGISTRY=registry.example.com/team`, then `podman push` the printed tags.
images: $(INSTALLED) $(SYSTEM)
	$(BIN)/python -m fraud_devcluster.images $(if $(REGISTRY),--registry $(REGISTRY))

# A real control plane on loopback to try `--target kserve` without a cluster (README "Try the
# kserve target"); `cluster-down` stops it. It needs kubectl and Go, not the test suite's packages.
cluster: $(INSTALLED) $(KUBECTL) go-servers
	$(BIN)/fraud-rollout cluster up

cluster-down: $(INSTALLED)
	$(BIN)/fraud-rollout cluster down

# JupyterLab on notebooks/ with this venv's kernel; Ctrl-C stops it. The notebook extra has its own
# lock, constrained by requirements.lock: it only adds packages to the venv.
notebook: $(NOTEBOOK)
	$(BIN)/jupyter lab --notebook-dir notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

$(NOTEBOOK): notebooks/requirements.lock $(INSTALLED)
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -r notebooks/requirements.lock
	touch $@

# Regenerate the locks after changing dependencies in pyproject.toml.
lock: $(INSTALLED)
	$(BIN)/uv pip compile -q pyproject.toml --extra rollout --extra dev --python-version 3.11 -o requirements.lock
	$(BIN)/uv pip compile -q pyproject.toml --python-version 3.11 -o serving/requirements.lock
	$(BIN)/uv pip compile -q pyproject.toml --extra rollout --extra dev --extra notebook -c requirements.lock \
	  --python-version 3.11 -o notebooks/requirements.lock

# A running `make cluster` is stopped first: its servers would outlive the files they use.
clean:
	if [ -x $(BIN)/fraud-rollout ]; then $(BIN)/fraud-rollout cluster down; fi
	rm -rf $(VENV) .fraud-rollout
