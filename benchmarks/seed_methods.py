"""Alias of ``python -m benchmarks.studies.seed_methods`` (the command the committed report names)."""

from benchmarks.studies.seed_methods import main

if __name__ == "__main__":
    main()
