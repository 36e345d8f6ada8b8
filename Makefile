# The two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/datasets

.PHONY: run install setup test lint bench bench-classify bench-detect bench-web bench-latency bench-group-cv bench-sources bench-adapt bench-shifts clean

# Direct dependencies are listed in requirements.in (runtime) and requirements-dev.in (test, lint);
# the pinned locks are requirements.txt and requirements-dev.txt, which includes it.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

setup: install
	$(PY) manage.py ensure_instance
	$(PY) manage.py migrate --noinput
	$(PY) manage.py ensure_default_model
	$(PY) manage.py ensure_admin

run: setup
	$(PY) manage.py runlab

# The suite waits on its Celery workers, browsers and subprocesses about half the time: two test
# processes per core (pytest-xdist, each with its own database, Redis database and worker; a test
# file stays in one process, for its module fixtures) keep two cores busy, 8 minutes against 11 with
# one a core. TEST_PROCESSES=0 runs it in one.
TEST_PROCESSES ?= 4
# More pytest arguments: .ci/run leaves tests/classifier out of its PostgreSQL run, as they touch no
# database.
PYTEST_ARGS ?=
test: install
	$(PY) -m pytest -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .

bench: bench-classify bench-detect bench-web bench-latency bench-shifts

# Benchmarks are scripts under bench/, run one way: `make bench-...`. bench-classify measures the
# active model version as the site's workers compute it, on each source's TEST split.
bench-classify: setup
	$(PY) bench/classify.py --model-version active --data $(DATA)/blood-cell-images --data $(DATA)/pbc

bench-detect: install
	$(PY) bench/detect.py --data $(DATA)

bench-web: setup
	$(PY) bench/web.py

# Not part of `make bench`: one full training on each of five group splits (8-14 minutes a split for
# LeukoNet on two cores, 40-70 minutes in all).
bench-group-cv: install
	$(PY) bench/group_cv.py --data $(DATA)/blood-cell-images

# Not part of `make bench` either: the shipped recipe (the bundled eight-type network's; MODEL_CARD.md)
# trained on each source alone and on both (about 2 h 15 min on a fast 2-core host, over 7 h on a slow
# one: README), then the (trained on) x (tested on) matrix. Runs are kept in SOURCES_RUNS and reused; RECIPE takes train_cli's recipe
# options, e.g. RECIPE="--arch leukonet --task 8class" SOURCES_RUNS=var/bench-sources-bn.
RECIPE ?= --arch leukonet-gn --task 8class
# SOURCES_RUNS unset: bench/sources.py's DEFAULT_RUNS, a folder for today's recipe.
SOURCES_RUNS ?=
RUNS_OPTION = $(if $(SOURCES_RUNS),--runs $(SOURCES_RUNS))
NETWORKS_OPTION = $(if $(SOURCES_RUNS),--networks $(SOURCES_RUNS))
bench-sources: install
	$(PY) bench/sources.py --data $(DATA)/blood-cell-images --data $(DATA)/pbc $(RUNS_OPTION) $(RECIPE)

# Not part of `make bench`: each leave-one-source-out network of bench-sources (in SOURCES_RUNS)
# adapted on k = 25, 50, 100, 200 reviewed cells of the source it never saw, measured on both
# sources' TEST, with the fine-tune time.
bench-adapt: install
	$(PY) bench/adapt.py --data $(DATA)/blood-cell-images --data $(DATA)/pbc $(NETWORKS_OPTION) $(BENCH_ADAPT_ARGS)

# The bundled eight-type network on up to 40 TEST cells per type of each source, each photograph
# changed as another lab's camera, microscope or stain would change it (about 6 minutes).
bench-shifts: install
	$(PY) bench/shifts.py --data $(DATA)/blood-cell-images --data $(DATA)/pbc

bench-latency: setup
	$(PY) bench/latency.py --data $(DATA)

# Not part of `make bench`: a year of a busy lab (2.5 million cells) built once in the PostgreSQL
# database DATABASE_URL names, which it may fill (about 3 minutes), then the pages timed on it.
.PHONY: bench-scale
bench-scale: install
	$(PY) bench/scale.py $(BENCH_SCALE_ARGS)

# Not part of `make bench`: the sample page, gallery and other pages in headless Chromium on big samples
# (500 cells, 1,000 one-cell photographs, 2,000 cells), the CPU slowed 4x: page weight, DOM size, long
# tasks and key-to-frame times (its database is built once, about 15 minutes on two cores).
.PHONY: bench-browser
bench-browser: install
	$(PY) bench/browser.py $(BENCH_BROWSER_ARGS)

# Not part of `make bench`: N uploaders x M smears against gunicorn and K classify workers on
# loopback, in a folder of its own under var/bench-load/ (about 3 minutes per 200 photographs).
.PHONY: bench-load
bench-load: install
	$(PY) bench/load.py --data $(DATA) $(BENCH_LOAD_ARGS)

clean:
	rm -rf $(VENV) var
