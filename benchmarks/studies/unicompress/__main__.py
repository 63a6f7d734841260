"""``python -m benchmarks.studies.unicompress``: see the package docstring."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from benchmarks.studies.unicompress.cli import main

main()
