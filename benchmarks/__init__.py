"""Rate-distortion benchmarks of streamcomp against the codecs users would otherwise pick.

Run ``python -m benchmarks.run --quick`` for a minutes-long smoke run, or without ``--quick`` for
the full sweep; see ``benchmarks/README.md`` for what is measured and the caveats.
"""
