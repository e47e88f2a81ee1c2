# backprop-lab: every target builds .venv first, so a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV   := .venv
EXTRAS := dev
BIN    := $(VENV)/bin
PY     := $(BIN)/python

.DEFAULT_GOAL := help
SWEEP  ?= default
ARGS   ?=
# PORT and HOST (make ui, make server): default 5000 and 127.0.0.1, set in pipeline/store/tracking.py
# make server: its own store and proxied artifacts under mlruns/ unless given (BACKEND_URI may be
# a PostgreSQL URL); the defaults live in pipeline/server.py
BACKEND_URI ?=
ARTIFACTS   ?=
# make server's basic-auth app (pipeline/store/auth.py): on beyond the loopback, AUTH=1 on it,
# AUTH=0 off; the first admin's password in $MLFLOW_AUTH_ADMIN_PASSWORD or ADMIN_PASSWORD_FILE;
# AUTH_DB_URI: the team's database for the users (default SQLite beside the store); METRICS=1:
# Prometheus metrics on /metrics
AUTH ?=
# Every value given to make reaches a recipe through the environment, quoted there ("$$RUN"),
# so that no value is ever run as a command; ARGS, a list of overrides, is split into words by
# pipeline/from_make.py (as a shell splits them, without running anything). `exec`: make's
# signals reach the entry point, not a shell between them.
export RUN SWEEP RESUME N HOST PORT BACKEND_URI ARTIFACTS ARGS AUTH_DB_URI ADMIN_PASSWORD_FILE
WITH_ARGS := $(PY) -m pipeline.from_make
# MLflow 3 sends usage telemetry unless told not to: never from this project.
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: help install sweep search ui server reproduce register report gradcheck test test-load test-ray test-slurm test-fast lint format bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $(VENV)

install: $(VENV)  ## create .venv and install the project with its dev tools

sweep: $(VENV)  ## run a sweep (SWEEP=default, ARGS="overrides"; RESUME=<parent id>|latest; DRY=1)
	exec $(WITH_ARGS) pipeline.train -m $(if $(RESUME),--resume "$$RESUME",sweep="$$SWEEP") \
		$(if $(DRY),--dry-run)

ui: $(VENV)  ## the MLflow UI on the store, at http://127.0.0.1:PORT (PORT=5000)
	exec $(PY) -m pipeline.ui $(if $(HOST),--host "$$HOST")

server: $(VENV)  ## a shared MLflow tracking server on HOST:PORT (runs go there with tracking=server)
	exec $(PY) -m pipeline.server $(if $(HOST),--host "$$HOST") \
		$(if $(BACKEND_URI),--backend-store-uri "$$BACKEND_URI") \
		$(if $(ARTIFACTS),--artifacts-destination "$$ARTIFACTS") \
		$(if $(filter 1,$(AUTH)),--auth) $(if $(filter 0,$(AUTH)),--no-auth) \
		$(if $(filter 1,$(METRICS)),--metrics) \
		$(if $(AUTH_DB_URI),--auth-db-uri "$$AUTH_DB_URI") \
		$(if $(ADMIN_PASSWORD_FILE),--admin-password-file "$$ADMIN_PASSWORD_FILE")

reproduce: $(VENV)  ## run a run's recorded config again and compare: RUN=<run id or config.yaml>
	@test -n "$$RUN" || { echo "error: RUN is not set: make reproduce RUN=<run id>" >&2; exit 2; }
	exec $(WITH_ARGS) pipeline.reproduce "$$RUN"

register: $(VENV)  ## a run's network in the Model Registry, alias champion: RUN=<run id>|best
	@test -n "$$RUN" || { echo "error: RUN is not set: make register RUN=<run id>|best" >&2; exit 2; }
	exec $(WITH_ARGS) pipeline.register "$$RUN"

# make search: N trials (default: search.n_trials in pipeline/job/config.py)
search: $(VENV)  ## Bayesian search (Optuna TPE, pruning): N trials; RESUME=<parent id>|latest
	exec $(WITH_ARGS) pipeline.search $(if $(RESUME),--resume "$$RESUME") \
		$(if $(N),search.n_trials="$$N")

report: $(VENV)  ## table and plots of the latest sweep (ARGS="--sweep <parent run id>")
	exec $(WITH_ARGS) pipeline.report

gradcheck: $(VENV)  ## backprop's gradients against centred differences (ARGS="model.depth=3")
	$(PY) -m pipeline.gradcheck $(ARGS)

# make test: TEST_WORKERS pytest-xdist workers, more than cores: a test mostly waits on its
# subprocesses, a server or a store's lock. worksteal: each worker starts on a run of whole
# modules (their session fixtures set up once) and takes tests from the others when done.
TEST_WORKERS ?= 3
test: $(VENV)  ## run the whole test suite (but the Slurm tests: make test-slurm)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not slurm" $(TESTS)

test-load: $(VENV)  ## the load test: 8 processes write 100 jobs to a server on PostgreSQL, open then with auth
	BACKPROP_LAB_LOAD_TEST=1 $(PY) -m pytest tests/test_server.py -k 100_jobs

# The ray extra pins older joblib and cloudpickle, so it gets a venv of its own (.venv-ray):
# .venv keeps the releases users of the default launcher get. No xdist: one Ray cluster at once.
test-ray:  ## sweeps on a local Ray cluster (tests/test_ray.py), in .venv-ray with the ray extra
	$(MAKE) --no-print-directory test VENV=.venv-ray EXTRAS=dev,ray TESTS=tests/test_ray.py \
		TEST_WORKERS=0

# Root only: installs Debian's slurm-wlm, munge, MariaDB and slurmdbd if missing, and starts and
# stops a single-node cluster on 127.0.0.1 in a temp folder (tests/slurm_cluster.py).
test-slurm: $(VENV)  ## sweeps on a real single-node Slurm (tests/test_slurm.py)
	$(PY) -m pytest -m slurm tests/test_slurm.py

test-fast: $(VENV)  ## run the tests not marked slow
	$(PY) -m pytest -m "not slow"

lint: $(VENV)  ## ruff check, format check, and the import layers (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo --no-cache

format: $(VENV)  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)  ## performance benchmarks (ratios against peers, medians)
	$(PY) benchmarks/bench_epoch.py
	$(PY) benchmarks/bench_optimizers.py
	$(PY) benchmarks/bench_sweep.py
	$(PY) benchmarks/bench_dynamics.py
	$(PY) benchmarks/bench_page.py
	$(PY) benchmarks/bench_server.py
	$(PY) benchmarks/bench_search.py

clean:  ## remove the venv, caches and Hydra outputs (keeps mlruns/)
	rm -rf $(VENV) .venv-ray .pytest_cache .ruff_cache outputs multirun *.egg-info
