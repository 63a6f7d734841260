"""Alias of ``python -m benchmarks.studies.pipeline_memory`` (the command the committed report names)."""

from benchmarks.studies.pipeline_memory import main

if __name__ == "__main__":
    raise SystemExit(main())
