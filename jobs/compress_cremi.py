"""Compress an EM volume (CREMI-like) and report ratio, PSNR, SSIM, time and where it went.

    python jobs/compress_cremi.py                       # the bundled real EM sample
    python jobs/compress_cremi.py --input vol.zarr --output out.zarr --ratio 12

With no ``--input`` it compresses the real ISBI 2012 EM crop shipped in ``examples/``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streamcomp.compress import compress
from streamcomp.errors import StreamcompError
from streamcomp.verify import evaluate

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "em_isbi2012_crop_16x128x128_u8.npy"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", default=str(SAMPLE), help="volume: .npy, .tif, .h5[#volumes/raw], zarr path/URL")
    p.add_argument("--output", default=str(ROOT / "out" / "em_sample.zarr"), help="output zarr path/URL")
    p.add_argument("--method", default="siren")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--ratio", type=float)
    target.add_argument("--psnr", type=float)
    p.add_argument("--chunks", help="chunk shape, e.g. 16,64,64")
    p.add_argument("--zarr-format", type=int, default=3, choices=(2, 3))
    p.add_argument("--params", default="{}", help="method parameters as JSON")
    p.add_argument("--verify-chunks", type=int, default=None, help="verify a random sample of chunks")
    p.add_argument("--overwrite", action="store_true", default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ratio = args.ratio if args.ratio is not None or args.psnr is not None else 8.0
    overwrite = args.overwrite if args.overwrite is not None else args.input == str(SAMPLE)
    try:
        result = compress(
            args.input,
            args.output,
            method=args.method,
            ratio=ratio,
            psnr=args.psnr,
            chunks=args.chunks,
            zarr_format=args.zarr_format,
            method_params=json.loads(args.params),
            overwrite=overwrite,
        )
        quality = evaluate(args.input, args.output, sample=args.verify_chunks)
    except StreamcompError as exc:
        print(f"compress_cremi: error: {exc}", file=sys.stderr)
        return 2
    print(
        "\n".join(
            [
                "",
                f"input     {args.input}  ({'x'.join(map(str, result.shape))} {result.dtype})",
                f"output    {result.dst}",
                f"method    {result.method}  chunks {'x'.join(map(str, result.chunks))}",
                f"ratio     {quality.ratio:.2f}x  ({quality.stored_bytes} of {quality.raw_bytes} bytes, "
                f"{quality.bits_per_voxel:.3f} bits/voxel, metadata included)",
                f"PSNR      {quality.psnr:.2f} dB  (peak = max - min of the original)",
                f"SSIM      {quality.ssim:.4f}",
                f"time      {result.seconds:.1f} s encode, {quality.decode_seconds:.2f} s decode",
            ]
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
