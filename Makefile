# `make help` lists the targets. Every target installs what it needs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help run test lint generate checkgenerate seed-demo clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e clients/python -e '.[dev,embeddings,tracing]'
	touch $(STAMP)

run: $(STAMP) ## Start the service on 127.0.0.1:50051 (embedded PostgreSQL unless FARADAY_DATABASE_URL is set)
	FARADAY_EMBEDDING_MODEL=$${FARADAY_EMBEDDING_MODEL:-wordllama-l2-supercat-256} $(BIN)/memory-service serve

seed-demo: $(STAMP) ## Load the example data into the same database `make run` uses
	$(BIN)/memory-service seed-demo

test: $(STAMP) ## Run the whole test suite (embedded PostgreSQL; FARADAY_TEST_DATABASE_URL for another)
	$(BIN)/pytest

lint: $(STAMP) ## ruff, mypy (strict) and buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy memory_service clients/python/src/faraday_memory_client
	$(BIN)/buf lint

generate: $(STAMP) ## Regenerate clients/python/src/faraday/memory/v1 from protos/
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python scripts/generate.py

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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

.PHONY: eval
EVAL_STAMP := $(VENV)/.eval-installed

$(EVAL_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[eval]'
	touch $(EVAL_STAMP)

eval: $(STAMP) $(EVAL_STAMP) ## Measure recall quality through the real API against BM25 and dense references (bench/eval/README.md)
	$(BIN)/python -m bench.eval.run
