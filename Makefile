# The README's commands. Everything a fresh machine needs is installed from here
# (plus the SLURM daemons that .ci/run starts), never by hand.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= all
# torch's CPU wheel is installed first and pinned: any unpinned torch pulls gigabytes of CUDA.
TORCH_SPEC      ?= torch==2.13.0
TENSORFLOW_SPEC ?= tensorflow-cpu>=2.16
SLIDEFLOW_SPEC  ?= slideflow==3.0.2
# One worker per CPU, each test file on one worker (module-scoped fixtures such as the demo run are built once):
# 8.2 min instead of 13.7 for .ci/run on 2 cores. PYTEST_ARGS= runs it in one process.
PYTEST_ARGS     ?= -n auto --dist loadfile

.PHONY: run test install bench lint clean help

help:
	@echo "make run    - create $(VENV), install, run the pipeline on the embedded demo"
	@echo "make test   - create $(VENV) if needed, run the whole test suite"
	@echo "make bench  - run the benchmarks in benchmarks/ (prints ratios against peers)"

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "slidetiles needs Python >= 3.11, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml setup.py lib/slidetiles/io/_fastscan.c | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q "$(TENSORFLOW_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev,torch,slurm]"
	# The compatibility tests' reference (tests/slideflow_ref.py); --no-deps: its own pins clash with ours.
	$(BIN)/python -m pip install -q --no-deps "$(SLIDEFLOW_SPEC)"
	touch $@

install: $(VENV)/.installed

run: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES)
	@echo
	@echo "Results:  results/report.html (open in a browser)"
	@echo "          results/manifests/<dataset>.json, results/splits/<plan>.json (+ .png/.svg plots)"
	@echo "          results/tfrecords/<source>/<label>/<slide>.tfrecords (+ .index.npz)"
	@echo "          results/extraction/<source>/<slide>.png (each slide's kept and removed tiles), .json"
	@echo "Logs:     logs/<rule>/...   Timings: results/benchmarks/<rule>/..."

test: install
	SLIDETILES_REQUIRE_SLIDEFLOW=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	cd benchmarks && for b in bench_tfrecord bench_decode bench_dataset bench_preserved_site bench_slide_readers bench_extract bench_dag bench_loaders; do \
		echo "== $$b"; ../$(BIN)/python $$b.py || exit 1; done

clean:
	rm -rf results logs .snakemake benchmarks/out
