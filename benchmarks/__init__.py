"""Rate-distortion benchmarks of streamcomp against the codecs users would otherwise pick, and studies.

Run ``python -m benchmarks.run --quick`` for a minutes-long smoke run, or without ``--quick`` for
the full sweep; the studies are under :mod:`benchmarks.studies`. The volumes are found through
:mod:`benchmarks.data`. See ``benchmarks/README.md`` for what is measured and the caveats.
"""
