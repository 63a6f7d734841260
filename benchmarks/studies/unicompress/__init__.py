"""UniCompress measurement (issue #3): shared model once per volume, student per chunk, vs siren and baselines.

Usage::

    python -m benchmarks.studies.unicompress [--quick] [--bundled] [--out benchmarks/results/unicompress]

(``python -m benchmarks.unicompress_bench``, the command the committed report names, is the same.)
For each real volume (a crop of the EM ISBI-2012 stack and a centred crop of the InVesalius head CT):

1. ``unicompress`` (``modes=auto``: per chunk the better of student + residual and the residual
   alone) is fitted ONCE on the planner's sample of the crop's 16x64x64 chunks
   (``streamcomp.plan.sample_items``, normalized by ``streamcomp.values.normalize``); fit time and
   shared-state size are recorded. Then for each target ratio the crop is planned as the pipeline
   plans an array (``streamcomp.plan``), every chunk gets its budget from
   ``streamcomp.plan.assign_budgets`` with the array's zarr metadata (shared state included, as
   ``zarr.json`` stores it) taken out first, and is encoded and decoded through the chunk layer
   (``encode_chunk`` / ``decode_chunk``). When the planner finds the ratio impossible (the shared
   state plus the smallest chunk payloads exceed ``raw / ratio``) the point is recorded as
   impossible, with its reason. The same shared state is then measured with the INR payload forced
   (``modes=inr``: the student's prediction in every chunk), once with the array-level bytes counted
   and once amortized (framed chunks only: what a volume of many thousand chunks sees), and the
   wavelet residual layer alone (``modes=residual``, no shared state), with the number of chunks
   whose chosen payload kept the INR prediction. Then the teacher is fitted again as the coding
   network (``network=teacher``, same seed: the teacher the student was distilled from,
   fine-tuned) and scored the same way, counted and amortized, against the student. On CT the
   student is also fitted with a coarser token patch (``COARSE_PATCH``) for the highest ratios.
2. Per-block ``siren`` (``steps=300``) at the same ratios, chunk by chunk through the chunk layer
   with the planner's budgets (framed chunk bytes only). On CPU it costs ~8 s per 16x64x64 chunk,
   so it runs on a fixed subset of chunks (``--siren-chunks``); the student (``modes=inr`` rows) is
   scored on the same subset too, so the student-vs-siren comparison is at equal ratio on equal voxels.
3. JPEG XL and x265 via ``benchmarks.baselines.at_ratio`` on the whole crop.
4. Optional ablations (``--ablations``, or ``--ablations-only`` to add them to an earlier run's
   results): prior modalities and KD terms, forced-student PSNR at EM 8x.
5. ``results.json``, ``REPORT.md``, ``rd.png`` under ``--out`` (``--quick``: a temp folder, so the
   committed report stays; ``--report-only`` re-renders a saved run).

All torch work runs single-threaded (``OMP_NUM_THREADS=1`` and ``torch.set_num_threads(1)``).
Modules: :mod:`.measure` (the measurements, on the shipped paths), :mod:`.analysis` (the findings),
:mod:`.report` (rendering), :mod:`.cli` (the command line and the order of the measurements).
"""
