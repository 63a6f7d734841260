"""Compress an EM volume (CREMI-like) on Ray and report ratio, PSNR, SSIM, time and where it went.

    python jobs/compress_cremi.py                       # the bundled real EM sample, embedded Ray
    python jobs/compress_cremi.py --input vol.zarr --output out.zarr --ratio 12
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/compress_cremi.py --input s3://bucket/vol.zarr --output s3://bucket/out.zarr --ratio 12

With no ``--input`` it compresses the real ISBI 2012 EM crop shipped in ``examples/``. Under
``ray job submit`` it runs on that cluster (``RAY_ADDRESS``); otherwise it starts an embedded local
Ray. Rerunning the same command after a crash completes the output: finished chunks are checked
and kept (``--no-resume`` refuses an existing output instead, ``--overwrite`` starts again). The
bundled sample's run is the exception: it overwrites its output, so the demo starts afresh each time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from streamcomp.api import compress
from streamcomp.cli import add_run_options, bound_note, configure_logging, run_options
from streamcomp.errors import StreamcompError
from streamcomp.verify import evaluate

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "em_isbi2012_crop_30x256x256_u8.npy"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", default=str(SAMPLE), help="volume: .npy, .tif, .h5[#volumes/raw], zarr/N5/precomputed")
    p.add_argument("--output", default=str(ROOT / "out" / "em_sample.zarr"), help="output zarr path/URL")
    add_run_options(p)
    p.add_argument("--verify-chunks", type=int, default=16, help="PSNR/SSIM on this many random chunks (0: all)")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="replace an existing output (always so for the bundled sample)")
    p.add_argument("--no-resume", action="store_true", help="refuse an existing output instead of completing it")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args)
    overwrite = args.overwrite if args.overwrite is not None else args.input == str(SAMPLE)
    t0 = time.perf_counter()
    try:
        options = run_options(args)
        result = compress(
            args.input, args.output, **options, overwrite=overwrite, resume=not args.no_resume, executor="ray"
        )
        sample = args.verify_chunks or None
        quality = evaluate(args.input, args.output, sample=sample, storage_options=options["storage_options"])
    except StreamcompError as exc:
        print(f"compress_cremi: error: {exc}", file=sys.stderr)
        return 2
    run = result.run
    checked = f"{quality.chunks_checked} of {run['chunks_total']} chunks"
    print(
        "\n".join(
            [
                "",
                f"input     {args.input}  ({'x'.join(map(str, result.shape))} {result.dtype})",
                f"output    {result.dst}",
                f"method    {result.coder}  chunks {'x'.join(map(str, result.chunks))}",
                f"ratio     {quality.ratio:.2f}x  ({quality.stored_bytes} of {quality.raw_bytes} bytes, "
                f"{quality.bits_per_voxel:.3f} bits/voxel, metadata included)",
                f"PSNR      {quality.psnr:.2f} dB  (peak = max - min of the original; {checked})",
                f"SSIM      {quality.ssim:.4f}",
                f"error     max |error| {quality.max_abs_error:g}{bound_note(quality)}",
                f"chunks    {result.chunks_written} {run['unit']}s encoded, {result.chunks_skipped} already done, "
                f"{run['chunks_fill']} fill chunks (not stored); {run['workers']} {run['executor']} workers"
                f"{' on Ray Data' if run['engine'] == 'data' else ''}"
                f"{' (GPU)' if run['gpu'] else ''}",
                f"speed     {run['voxels_per_second'] / 1e6:.3f} Mvoxel/s encode",
                f"time      {time.perf_counter() - t0:.1f} s wall ({result.seconds:.1f} s compress, "
                f"{quality.decode_seconds:.2f} s decode)",
                f"manifest  {result.manifest}",
            ]
        )
    )
    if quality.bound_met is False:
        print(f"compress_cremi: error: {result.dst} misses its bound", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
