"""Studies: focused measurements beside the rate-distortion harness (:mod:`benchmarks.run`).

Each is a small script over the shared helpers (:mod:`benchmarks.data` for the volumes,
:mod:`benchmarks.studies.common` for chunk round trips and quality, :mod:`benchmarks.machine`,
:mod:`benchmarks.memory`) and the shipped code paths (the chunk layer, the planner, the API):

- ``python -m benchmarks.studies.unicompress``: the UniCompress student against siren and baselines;
- ``python -m benchmarks.studies.seed_methods``: SCI and hybrid planes against the per-chunk INRs;
- ``python -m benchmarks.studies.pipeline_memory``: the Ray pipeline's memory as the volume grows.

Each takes ``--quick`` (tiny crops, a smoke run written to a temp folder) and ``--bundled`` (the
crops shipped in the repository instead of the whole volumes), where the study has data to crop.
"""
