# `make help` lists the targets. Every target installs what it needs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help run test lint lock generate checkgenerate check-client-range seed-demo clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# Tools that cannot live in .venv, in an environment of their own:
# - protoc from this grpcio-tools: its protobuf 4.25 gencode is what lets the
#   client accept protobuf 4.25 to 7.x (clients/python/pyproject.toml), and
#   it cannot share a venv with the server's protobuf 7 (the mypy-protobuf
#   plugins run from $(BIN));
# - uv, which compiles the lock files: `make lock` must work when
#   pyproject.toml has dependencies the current lock (and so .venv) lacks.
TOOLS_VENV := .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed
TOOLS := grpcio-tools==1.62.3 googleapis-common-protos==1.63.2 uv==0.13.9

$(TOOLS_STAMP): Makefile
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install --quiet $(TOOLS)
	touch $(TOOLS_STAMP)

# The pinned, hashed dependencies first (requirements/lock.txt, from
# `make lock`), then the project itself without resolving anything: the
# server's editable install includes the client's packages.
$(STAMP): requirements/lock.txt pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements/lock.txt
	$(BIN)/pip install --quiet --no-deps -e .
	@$(BIN)/pip check >/dev/null || ($(BIN)/pip check; \
	  echo "requirements/lock.txt lacks what pyproject.toml asks for: run 'make lock'"; exit 1)
	touch $(STAMP)

# requirements/lock.txt: what `make test`, `make run` and CI install (extras
# dev, embeddings and tracing); requirements/server.txt: what the Docker image
# installs (embeddings and tracing), pinned to the same versions. Universal (every
# platform and Python >= 3.11), with the sha256 of every file. A version
# already in a lock is kept unless pyproject.toml rules it out: to upgrade
# everything, delete the locks first.
UV_COMPILE := $(TOOLS_VENV)/bin/uv pip compile --quiet --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command "make lock"

lock: $(TOOLS_STAMP) ## Recompile requirements/lock.txt and server.txt from pyproject.toml (after changing dependencies)
	$(UV_COMPILE) pyproject.toml --extra dev --extra embeddings --extra tracing -o requirements/lock.txt
	$(UV_COMPILE) pyproject.toml --extra embeddings --extra tracing -c requirements/lock.txt -o requirements/server.txt

run: $(STAMP) ## Start the service on 127.0.0.1:50051 (embedded PostgreSQL unless FARADAY_DATABASE_URL is set)
	FARADAY_EMBEDDING_MODEL=$${FARADAY_EMBEDDING_MODEL:-wordllama-l2-supercat-256} $(BIN)/memory-service serve

seed-demo: $(STAMP) ## Load the example data into the same database `make run` uses
	$(BIN)/memory-service seed-demo

# PYTEST_ARGS: extra pytest arguments, e.g. PYTEST_ARGS='-m "not slow"' to
# leave out the tests marked slow (fault and load tests); CI runs them all.
PYTEST_ARGS ?=
test: $(STAMP) ## Run the whole test suite (embedded PostgreSQL; FARADAY_TEST_DATABASE_URL for another)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff, mypy (strict) and buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy memory_service clients/python/src/faraday_memory_client
	$(BIN)/buf lint

generate: $(STAMP) $(TOOLS_STAMP) ## Regenerate clients/python/src/faraday/memory/v1 from protos/
	PATH="$(CURDIR)/$(BIN):$$PATH" $(TOOLS_VENV)/bin/python scripts/generate.py

check-client-range: $(STAMP) ## Smoke-test the client at the oldest and newest grpcio/protobuf it allows (~1 min)
	$(BIN)/python scripts/check_client_range.py

checkgenerate: generate ## Fail if the committed generated code is stale
	@git diff --exit-code --stat -- clients/python/src/faraday \
	  && test -z "$$(git status --porcelain -- clients/python/src/faraday)" \
	  || (echo "generated code is stale: run 'make generate' and commit" && exit 1)

.PHONY: bench
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

bench: $(STAMP) $(BENCH_STAMP) ## Run the performance benchmark (bench/README.md); ARGS=--quick for a smoke run
	$(BIN)/python bench/run.py $(ARGS)

clean: ## Remove the virtualenv and caches (not the embedded database)
	rm -rf $(VENV) $(TOOLS_VENV) .pytest_cache .mypy_cache .ruff_cache

.PHONY: eval
EVAL_STAMP := $(VENV)/.eval-installed

$(EVAL_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[eval]'
	touch $(EVAL_STAMP)

eval: $(STAMP) $(EVAL_STAMP) ## Measure recall quality through the real API against BM25 and dense references (bench/eval/README.md)
	$(BIN)/python -m bench.eval.run
