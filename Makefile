# Two commands do all the set-up: `make demo` (main job on the bundled sample) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0

.PHONY: setup demo test lint bench clean

$(BIN)/streamcomp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the local CPU build, not gigabytes of CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	# The AWS trio pinned exactly: s3fs 2026.9 needs aiobotocore 3.10, which pins botocore.
	$(BIN)/pip install -q "aiobotocore==3.10.0" "botocore==1.43.117" "boto3==1.43.117" \
		"zfpy==1.0.1" -e ".[dev,bench]"
	touch $@

setup: $(BIN)/streamcomp

demo: setup
	$(BIN)/python jobs/compress_cremi.py

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf out .pytest_cache
