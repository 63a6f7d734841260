"""Archive every volume under a prefix (bucket, folder) into a destination prefix, verified.

    python jobs/archive_bucket.py s3://raw-bucket/lab/ s3://archive-bucket/lab/ --ratio 12
    python jobs/archive_bucket.py /data/scans/ file:///archive/scans/ --psnr 40 --method siren
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/archive_bucket.py s3://raw/ s3://archive/ --ratio 12 --gpu

Finds zarr v2/v3 arrays, OME-Zarr groups (full-resolution level), .npy and .tif files; compresses
each (one Ray session) to the same relative path under the destination (files: ``x.npy`` ->
``x.zarr``); verifies a sample of chunks; records each volume in
``<destination>/archive_manifest.jsonl``. Rerun to finish: verified volumes are skipped and a
half-written output resumes at chunk level. Sources are never modified. Credentials come from the
environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL) or --endpoint-url/--anon.
Exit status: 0 all verified (or skipped as unreadable), 1 some failed, 2 cannot start.
"""

from __future__ import annotations

import argparse
import json
import sys

from streamcomp.archive import archive
from streamcomp.errors import StreamcompError
from streamcomp.methods import DEFAULT_METHOD, METHODS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="source prefix: s3://bucket/prefix/, file:///path/ or a local folder")
    p.add_argument("destination", help="destination prefix (same forms)")
    p.add_argument("--method", default=DEFAULT_METHOD, help=f"one of: {', '.join(sorted(METHODS))}")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--ratio", type=float)
    target.add_argument("--psnr", type=float)
    p.add_argument("--params", default="{}", help="method parameters as JSON")
    p.add_argument("--chunks", help="chunk shape, e.g. 16,64,64 (default: the method's; unicompress 32,128,128)")
    p.add_argument("--verify-chunks", type=int, default=8, help="chunks decoded per volume to verify (0: all)")
    p.add_argument("--min-psnr", type=float, help="fail verification below this PSNR (default: --psnr - 0.5)")
    p.add_argument("--max-volumes", type=int, help="stop after this many volumes (rerun for the rest)")
    p.add_argument("--workers", type=int)
    p.add_argument("--ray-address", help="Ray cluster (default: RAY_ADDRESS, else an embedded Ray)")
    p.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--endpoint-url", help="S3-compatible endpoint for s3:// URLs")
    p.add_argument("--anon", action="store_true", help="anonymous access (public buckets)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    so: dict = {}
    if args.endpoint_url:
        so["endpoint_url"] = args.endpoint_url
    if args.anon:
        so["anon"] = True
    ratio = args.ratio if args.ratio is not None or args.psnr is not None else 8.0
    try:
        report = archive(args.source, args.destination, method=args.method, ratio=ratio, psnr=args.psnr,
                         method_params=json.loads(args.params), chunks=args.chunks, storage_options=so or None,
                         ray_address=args.ray_address, workers=args.workers, gpu=args.gpu,
                         verify_chunks=args.verify_chunks, min_psnr=args.min_psnr, max_volumes=args.max_volumes,
                         log=print)
    except StreamcompError as exc:
        print(f"archive_bucket: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
    print(f"{len(report.verified)} verified, {len(report.already_done)} already done, {len(report.failed)} failed, "
          f"{len(report.skipped)} skipped, {len(report.remaining)} remaining; manifest {report.manifest}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
