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
from streamcomp.cli import add_run_options, configure_logging, run_options
from streamcomp.errors import StreamcompError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="source prefix: s3://bucket/prefix/, file:///path/ or a local folder")
    p.add_argument("destination", help="destination prefix (same forms)")
    add_run_options(p)
    p.add_argument("--verify-chunks", type=int, default=8, help="chunks decoded per volume to verify (0: all)")
    p.add_argument("--min-psnr", type=float, help="fail verification below this PSNR (default: --psnr - 0.5)")
    p.add_argument("--max-volumes", type=int, help="stop after this many volumes (rerun for the rest)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args)
    try:
        report = archive(args.source, args.destination, **run_options(args), verify_chunks=args.verify_chunks,
                         min_psnr=args.min_psnr, max_volumes=args.max_volumes, log=print)
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
