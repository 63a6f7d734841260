"""``streamcomp`` command line: compress, info, decompress, evaluate, view.

Every failure the user can fix is a one-line ``streamcomp: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from streamcomp.api import compress
from streamcomp.errors import InputError, StreamcompError
from streamcomp.format.codec import codec_config_of
from streamcomp.format.ome import PYRAMID_CODECS, group_levels, is_zstd_level, level_url
from streamcomp.format.store import array_stored_bytes
from streamcomp.methods import DEFAULT_METHOD, method_class, method_names
from streamcomp.pipeline.config import ENGINES
from streamcomp.plan import chunk_grid
from streamcomp.source import is_url, local_path
from streamcomp.verify import evaluate, open_compressed


def json_object(text: str | None, what: str) -> dict:
    """A JSON object given on the command line ({} when absent)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} must be a JSON object like '{{\"steps\": 300}}': {exc}") from exc
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object")
    return value


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options every compressing entry point takes (CLI, jobs): method, target, layout, cluster, storage."""
    p.add_argument("--method", default=DEFAULT_METHOD, help=f"one of: {', '.join(method_names())}")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--ratio", type=float, help="target compression ratio (default 8)")
    target.add_argument("--psnr", type=float, help="target PSNR in dB (peak = max - min)")
    target.add_argument("--lossless", action="store_true", help="bit-exact: every voxel decodes to its source value")
    target.add_argument("--max-error", type=float, metavar="E",
                        help="no voxel off by more than E, in the data's units (0 = --lossless)")
    default_chunks = ",".join(map(str, method_class(DEFAULT_METHOD).default_chunks[3]))
    p.add_argument("--chunks", help=f"chunk shape, e.g. 64,128,128 (default: the method's; {DEFAULT_METHOD} "
                   f"{default_chunks}: larger chunks code better, smaller ones read faster one by one)")
    p.add_argument("--zarr-format", type=int, default=3, choices=(2, 3))
    p.add_argument("--shards", metavar="SHAPE|auto",
                   help="zarr v3 shards of many chunks, one object each, e.g. 64,1024,1024 or auto (~1 GiB raw)")
    p.add_argument("--params", help="method parameters as JSON, e.g. '{\"filter_channels\": 0}' (wavelet: no "
                   "post-filter) or, with --method siren, '{\"steps\": 300}'")
    p.add_argument("--workers", type=int,
                   help="encoder workers: Ray actors, or coding threads when the run is in-process "
                        "(default: one per CPU, or per GPU)")
    p.add_argument("--ray-address", help="Ray cluster address (default: RAY_ADDRESS, else embedded Ray)")
    p.add_argument("--engine", default="pool", choices=ENGINES,
                   help="what feeds the encode phase to the Ray workers: the pipeline's actor pool (default) "
                        "or Ray Data (map_batches over an autoscaling actor pool; needs streamcomp[data])")
    p.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None,
                   help="workers request one GPU each (default: when the cluster has GPUs)")
    p.add_argument("--endpoint-url", help="S3-compatible endpoint for s3:// URLs")
    p.add_argument("--anon", action="store_true", help="anonymous access to public buckets")
    p.add_argument("--storage-options", help="fsspec storage options as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    p.add_argument("-v", "--verbose", action="store_true", help="debug messages too (training progress)")


def storage_options(args: argparse.Namespace) -> dict | None:
    so = json_object(args.storage_options, "--storage-options")
    if args.endpoint_url:
        so["endpoint_url"] = args.endpoint_url
    if args.anon:
        so["anon"] = True
    return so or None


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`streamcomp.api.compress` from :func:`add_run_options`' options."""
    targets = (args.ratio, args.psnr, args.max_error, args.lossless or None)
    ratio = 8.0 if all(t is None for t in targets) else args.ratio
    return {
        "method": args.method,
        "ratio": ratio,
        "psnr": args.psnr,
        "max_error": args.max_error,
        "lossless": args.lossless,
        "chunks": args.chunks,
        "shards": args.shards,
        "zarr_format": args.zarr_format,
        "method_params": json_object(args.params, "--params"),
        "workers": args.workers,
        "ray_address": args.ray_address,
        "engine": args.engine,
        "gpu": args.gpu,
        "storage_options": storage_options(args),
        "progress": not args.quiet,
    }


def configure_logging(args: argparse.Namespace) -> None:
    """Library messages (``logging``) on stderr: warnings with ``-q``, debug with ``-v``, else info."""
    level = logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    level = logging.DEBUG if getattr(args, "verbose", False) else level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s" if level > logging.DEBUG else "%(name)s: %(message)s"))
    root = logging.getLogger("streamcomp")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def cmd_compress(args: argparse.Namespace) -> None:
    result = compress(
        args.src, args.dst, **run_options(args), overwrite=args.overwrite, resume=args.resume, executor=args.executor,
        ome_zarr=args.ome_zarr, pyramid_codec=args.pyramid_codec,
    )
    unit = result.run["unit"]
    if result.chunks_skipped:
        print(f"resumed: {result.chunks_skipped} {unit}s already done, {result.chunks_written} encoded now")
    print(
        f"{result.dst}: {result.coder}, ratio {result.ratio:.2f}x ({result.bits_per_voxel:.3f} bits/voxel), "
        f"{result.stored_bytes} bytes stored, {result.chunks_written} {unit}s written, {result.seconds:.1f} s"
    )
    if result.pyramid_bytes is not None:
        print(f"pyramid: {result.pyramid_bytes} bytes more (levels 1.. and the OME-Zarr group document; "
              f"ratio with them {result.raw_bytes / max(result.stored_bytes + result.pyramid_bytes, 1):.2f}x)")


def cmd_info(args: argparse.Namespace) -> None:
    array = open_compressed(args.dst)
    config = codec_config_of(array)
    stored = array_stored_bytes(array)
    raw = int(np.prod(array.shape)) * array.dtype.itemsize
    info = {
        "path": args.dst,
        "zarr_format": array.metadata.zarr_format,
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "chunks": list(array.chunks),
        "mode": mode_of(config),
        "method": config["method"],
        "params": config["params"],
        "codec_format_version": config["format_version"],
        "shared_state_bytes": len(config["shared"]) * 3 // 4,
        "stored_bytes": stored,
        "raw_bytes": raw,
        "ratio": round(raw / max(stored, 1), 3),
    }
    levels = group_levels(args.dst)
    if levels is not None:
        info["levels"] = [level_summary(args.dst, k, path) for k, path in enumerate(levels)]
    if args.json:
        print(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        print(f"{key:>22}: {value}")


def level_summary(dst: str, level: int, path: str) -> dict[str, Any]:
    """One OME-Zarr level for ``info``: where, its shape and chunks, its codec, its bytes."""
    array = open_compressed(dst, level=level)
    codec = "zstd" if is_zstd_level(array) else f"streamcomp {codec_config_of(array)['method']}"
    return {"path": level_url(dst, path), "shape": list(array.shape), "chunks": list(array.chunks), "codec": codec,
            "stored_bytes": array_stored_bytes(array)}


def mode_of(config: dict[str, Any]) -> str:
    """How an array's chunks were coded, in words: lossless, bounded, or the lossy target."""
    bound = config.get("max_error")
    if bound is not None:
        if bound == 0:
            return "lossless (bit-exact)"
        model = ", levels under a fitted context model" if config.get("shared") else ""
        return f"max error {bound:g} (every voxel within the bound{model})"
    if config["max_mse"] is not None:
        return f"lossy, quality target (MSE <= {config['max_mse']:g} per chunk)"
    return f"lossy, rate target ({8 * (config['bytes_per_voxel'] or 0):.3f} bits/voxel)"


def cmd_decompress(args: argparse.Namespace) -> None:
    array = open_compressed(args.dst)
    out = args.out
    if os.path.exists(local_path(out)) and not args.overwrite:
        raise InputError(f"{out} already exists; pass --overwrite to replace it")
    if args.scale is not None:
        from streamcomp.scaled import ScaledReader  # imports torch: only scaled reads need it

        reader = ScaledReader(args.dst, args.scale)
        shape = reader.output_shape()
        pieces = reader.pieces()
        total = reader.piece_count()
    else:
        shape = tuple(array.shape)
        pieces = ((item.slices, array[item.slices]) for item in chunk_grid(shape, tuple(array.chunks)))
        total = math.prod(math.ceil(n / c) for n, c in zip(shape, array.chunks, strict=True))
    if is_url(out):
        raise InputError("decompress writes a local .npy file or a local zarr directory")
    if out.endswith(".npy"):
        target = np.lib.format.open_memmap(out, mode="w+", dtype=array.dtype, shape=shape)
    else:
        import zarr

        chunks = tuple(min(c, n) for c, n in zip(array.chunks, shape, strict=True))
        target = zarr.create_array(out, shape=shape, chunks=chunks, dtype=array.dtype, overwrite=args.overwrite)
    for where, values in tqdm(pieces, total=total, desc="decode", unit="chunk", disable=args.quiet):
        target[where] = values
    if isinstance(target, np.memmap):
        target.flush()
    print(f"wrote {out} ({'x'.join(map(str, shape))} {array.dtype})")


def cmd_evaluate(args: argparse.Namespace) -> None:
    q = evaluate(args.original, args.dst, sample=args.sample, progress=not args.quiet)
    if args.json:
        print(json.dumps(q.as_dict(), indent=2))
        return
    print(
        f"ratio {q.ratio:.2f}x  PSNR {q.psnr:.2f} dB  SSIM {q.ssim:.4f}  "
        f"{q.bits_per_voxel:.3f} bits/voxel  max |error| {q.max_abs_error:g}{bound_note(q)}  "
        f"({q.chunks_checked} chunks, decode {q.decode_seconds:.2f} s)"
    )
    if q.bound_met is False:
        raise InputError(f"{args.dst} misses its stored bound: max |error| {q.max_abs_error:g} > {q.max_error:g}")


def bound_note(q: Any) -> str:
    """What a :class:`~streamcomp.verify.Quality` says of the array's stored bound (empty: none)."""
    if q.max_error is None:
        return ""
    return f" (bound {q.max_error:g}: {'met' if q.bound_met else 'MISSED'}{', bit-exact' if q.exact else ''})"


def cmd_view(args: argparse.Namespace) -> None:
    from streamcomp.view import serve, stop

    served = serve(args.dst, args.level, args.port)
    shape = "x".join(map(str, served.array.shape))
    print(f"level {args.level} ({shape} {served.array.dtype}) served to neuroglancer at {served.url}", flush=True)
    print("press Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamcomp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compress", help="compress a volume into a zarr array")
    p.add_argument("src", help=".npy, .tif, .h5[#dataset] or a zarr path/URL")
    p.add_argument("dst", help="output zarr path or URL")
    add_run_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--resume", action="store_true", help="complete an existing output (keeps valid chunks)")
    p.add_argument("--executor", default="auto", choices=("auto", "ray", "local"),
                   help="auto: in-process for tiny inputs when no Ray is running, else Ray")
    p.add_argument("--ome-zarr", action="store_true",
                   help="write an OME-Zarr 0.5 group: level 0 at DST/0 and a pyramid of averaged levels")
    p.add_argument("--pyramid-codec", default="streamcomp", choices=PYRAMID_CODECS,
                   help="code the pyramid levels like level 0, or with zstd (any viewer decodes it)")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("info", help="describe a compressed array")
    p.add_argument("dst")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("decompress", help="decode a compressed array to .npy or plain zarr")
    p.add_argument("dst")
    p.add_argument("out", help="output .npy file or zarr directory")
    p.add_argument("--scale", help="decode at this resolution, e.g. 0.5 or per axis 1,0.5,0.5 (coordinate "
                   "methods: the chunks are evaluated on the coarser grid, not decoded and downsampled)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_decompress)

    p = sub.add_parser("evaluate", help="ratio, PSNR, SSIM and bits/voxel against the original")
    p.add_argument("original")
    p.add_argument("dst")
    p.add_argument("--sample", type=int, help="check only this many random chunks")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("view", help="serve a compressed array (any pyramid level) to neuroglancer on 127.0.0.1")
    p.add_argument("dst")
    p.add_argument("--level", type=int, default=0, help="pyramid level of an OME-Zarr group (0: full resolution)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    p.set_defaults(func=cmd_view)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args)
    try:
        args.func(args)
    except StreamcompError as exc:
        print(f"streamcomp: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
