"""Alias of ``python -m benchmarks.studies.unicompress`` (the command the committed report names)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from benchmarks.studies.unicompress.cli import main

if __name__ == "__main__":
    main()
