# Two commands do all the set-up: `make demo` (main job on the bundled sample) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0

.PHONY: setup demo test lint bench clean cluster-up cluster-down submit

$(BIN)/streamcomp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the local CPU build, not gigabytes of CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	# The AWS trio pinned exactly: s3fs 2026.9 needs aiobotocore 3.10, which pins botocore.
	$(BIN)/pip install -q "aiobotocore==3.10.0" "botocore==1.43.117" "boto3==1.43.117" \
		"zfpy==1.0.1" -e ".[dev,bench,view,data]"
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

# A local Ray head on 127.0.0.1 and `ray job submit` to it (see cluster/local.sh).
# make submit ARGS="--input vol.zarr --output out.zarr --ratio 12"
cluster-up: setup
	cluster/local.sh up

cluster-down:
	cluster/local.sh down

submit: setup
	cluster/local.sh submit $(ARGS)

clean:
	rm -rf out .pytest_cache

# Archive every volume under a prefix (see jobs/archive_bucket.py, cluster/README.md).
# make archive ARGS="s3://raw-bucket/ s3://archive-bucket/ --ratio 12"
.PHONY: archive
archive: setup
	$(BIN)/python jobs/archive_bucket.py $(ARGS)
