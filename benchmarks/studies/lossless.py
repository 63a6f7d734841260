"""Lossless and near-lossless (max-error-bounded) coding: streamcomp against the standard codecs.

    python -m benchmarks.studies.lossless [--quick] [--bundled] [--volumes em,ct_head,ct_thorax,mri4d]
                                          [--chunks3d 64,256,256] [--chunks4d 8,32,128,128] [--out DIR]

Lossless rows (E = 0): JPEG XL effort 7 and 9, JPEG-LS, HTJ2K reversible and PNG (per 2D slice
through imagecodecs, 4D series as t*z slices, signed CT shifted to unsigned by its minimum, the
shift and per-slice offsets charged as stored bytes: :func:`benchmarks.codecs_image._slice_roundtrip`),
zstd -19 and blosc (:mod:`benchmarks.codecs_lossless`), and streamcomp with ``max_error=0``. Every
lossless codec must round-trip bit for bit, else the study stops. Near-lossless rows (E = 1, 2, 4;
CT also 8, 16): JPEG-LS with NEAR = E, SZ3 with absolute bound E on float32 (rounded back to the
integer dtype, :func:`benchmarks.codecs_float._sz3`), and streamcomp with ``max_error=E``; the
measured max error is checked on every voxel and a violation is flagged (exit status 1).

Throughput is per core: every codec is run single-threaded (JPEG XL ``numthreads=1``, blosc
``set_nthreads(1)``, SZ3 without OpenMP, streamcomp's in-process executor with one torch thread
and a one-thread zarr pool); the threads column says what each ran with. streamcomp times
include its file I/O (it reads the ``.npy`` and writes a zarr store), the baselines' do not.
Writes ``lossless.{json,md,png}`` to ``--out`` (default ``benchmarks/results/``; ``--quick``: a
temp folder, so the committed report stays).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import data
from benchmarks.codec_api import CodecResult
from benchmarks.codecs_image import ANY_BITS, _htj2k_decode, _imagecodecs_reason, _slice_roundtrip
from benchmarks.studies.common import machine, peak_of, torch_threads, write_json
from benchmarks.volumes import VOLUMES
from streamcomp.format.bounded import BOUNDED_CHUNKS

BOUNDS = (1, 2, 4)
CT_EXTRA_BOUNDS = (8, 16)
JXL_EFFORTS = (7, 9)
PNG_LEVEL = 9
DEFAULT_CHUNKS = {ndim: ",".join(map(str, chunks)) for ndim, chunks in BOUNDED_CHUNKS.items()}  # streamcomp's own
NEAR_CODECS = ("JPEG-LS", "SZ3", "streamcomp")
UNSUPPORTED = "streamcomp: max_error not supported by this build yet"


class RoundTripError(RuntimeError):
    """A lossless codec did not give back the exact volume: its numbers would be meaningless."""


@dataclasses.dataclass(frozen=True)
class Codec:
    """A baseline row: ``run(volume, E)`` (E = 0 lossless), why it cannot run, and its threads."""

    name: str
    run: Callable[[np.ndarray, int], CodecResult]
    unavailable: Callable[[], str | None]
    threads: str = "1"


# --- per-slice image codecs: (slice, knob, bits) -> bytes, as codecs_image's encoders -------------


def _jxl_encode(img: np.ndarray, _knob: float, bits: int, effort: int) -> bytes:
    import imagecodecs

    # bitspersample = the bits the (shifted) data needs: a few % smaller than the 16-bit default.
    return imagecodecs.jpegxl_encode(
        img, effort=effort, distance=0, lossless=True, bitspersample=bits, numthreads=1
    )  # fmt: skip


def _jxl_decode(stream: bytes) -> np.ndarray:
    import imagecodecs

    return imagecodecs.jpegxl_decode(stream, numthreads=1)


def _jpegls_encode(img: np.ndarray, near: float, _bits: int) -> bytes:
    import imagecodecs

    # level is CharLS's NEAR (0 = lossless); imagecodecs sets bits_per_sample from the itemsize.
    return imagecodecs.jpegls_encode(img, level=int(near))


def _jpegls_decode(stream: bytes) -> np.ndarray:
    import imagecodecs

    return imagecodecs.jpegls_decode(stream)


def _htj2k_lossless(img: np.ndarray, _knob: float, _bits: int) -> bytes:
    import imagecodecs

    return imagecodecs.htj2k_encode(img, reversible=True)


def _png_encode(img: np.ndarray, _knob: float, _bits: int) -> bytes:
    import imagecodecs

    return imagecodecs.png_encode(img, level=PNG_LEVEL)


def _png_decode(stream: bytes) -> np.ndarray:
    import imagecodecs

    return imagecodecs.png_decode(stream)


def _per_slice(encode: Callable, decode: Callable, bits: tuple[int, ...]) -> Callable[[np.ndarray, int], CodecResult]:
    return partial(_slice_roundtrip, encode=encode, decode=decode, allowed_bits=bits)


def _sz3_abs(volume: np.ndarray, bound: int) -> CodecResult:
    """SZ3 with absolute bound ``bound`` (codecs_float's knob is relative to the range)."""
    from benchmarks.codecs_float import _span, _sz3

    return _sz3(volume, bound / _span(volume))


def _registered(name: str) -> Codec:
    """A lossless floor from :mod:`benchmarks.codecs_lossless`, by its registered name."""
    from benchmarks.codecs_lossless import BASELINES

    b = {x.name: x for x in BASELINES}[name]
    label = {"zstd": "zstd -19", "blosc": "blosc zstd9 bitshuffle"}[name]
    return Codec(label, lambda v, _e: b.run(v, 0.0), b.unavailable)


def lossless_codecs() -> list[Codec]:
    """The lossless baselines, in table order."""
    jxl = [
        Codec(f"JPEG XL e{e}", _per_slice(partial(_jxl_encode, effort=e), _jxl_decode, ANY_BITS),
              partial(_imagecodecs_reason, "jpegxl"))
        for e in JXL_EFFORTS
    ]  # fmt: skip
    return [
        *jxl,
        Codec("JPEG-LS", _per_slice(_jpegls_encode, _jpegls_decode, (8, 16)), partial(_imagecodecs_reason, "jpegls")),
        Codec("HTJ2K", _per_slice(_htj2k_lossless, _htj2k_decode, (8, 16)), partial(_imagecodecs_reason, "htj2k")),
        Codec(f"PNG {PNG_LEVEL}", _per_slice(_png_encode, _png_decode, (8, 16)), partial(_imagecodecs_reason, "png")),
        _registered("zstd"),
        _registered("blosc"),
    ]


def near_codecs() -> list[Codec]:
    """The max-error-bounded baselines (run at E >= 1)."""
    from benchmarks.codecs_float import _pysz_reason

    return [
        Codec("JPEG-LS", _per_slice(_jpegls_encode, _jpegls_decode, (8, 16)), partial(_imagecodecs_reason, "jpegls")),
        Codec("SZ3", _sz3_abs, _pysz_reason),
    ]


# --- scoring --------------------------------------------------------------------------------------


def max_abs_error(original: np.ndarray, decoded: np.ndarray) -> int:
    """Largest |decoded - original| over every voxel, in integer units (no overflow)."""
    return int(np.max(np.abs(decoded.astype(np.int64) - original.astype(np.int64))))


def score(name: str, vol: np.ndarray, bound: int, stored: int, decoded: np.ndarray, enc_s: float, dec_s: float) -> dict:
    """One row's numbers; raises :class:`RoundTripError` when a lossless row is not exact."""
    from streamcomp.metrics import psnr

    if decoded.shape != vol.shape or decoded.dtype != vol.dtype:
        raise RoundTripError(f"{name}: decoded {decoded.dtype}{decoded.shape}, expected {vol.dtype}{vol.shape}")
    err = max_abs_error(vol, decoded)
    if bound == 0 and err != 0:
        raise RoundTripError(f"{name}: lossless round trip is not exact (max |error| {err})")
    mvox = vol.size / 1e6
    return {
        "codec": name,
        "E": bound,
        "stored_bytes": int(stored),
        "raw_bytes": int(vol.nbytes),
        "ratio": vol.nbytes / stored,
        "bits_per_voxel": 8 * stored / vol.size,
        "max_error": err,
        "violation": err > bound,
        "psnr": psnr(vol, decoded, peak_of(vol)) if err else None,  # None: exact (JSON has no inf)
        "encode_mvox_s": mvox / max(enc_s, 1e-9),
        "decode_mvox_s": mvox / max(dec_s, 1e-9),
        "encode_s": enc_s,
        "decode_s": dec_s,
    }


def run_codec(codec: Codec, vol: np.ndarray, bound: int) -> dict:
    """One baseline at one bound, or a row saying why it could not run."""
    reason = codec.unavailable()
    if reason:
        return {"codec": codec.name, "E": bound, "skipped": reason}
    r = codec.run(vol, bound)
    return {
        **score(codec.name, vol, bound, r.stored_bytes, r.decoded, r.encode_s, r.decode_s),
        "threads": codec.threads,
    }


# --- streamcomp -----------------------------------------------------------------------------------


def streamcomp_unsupported() -> str | None:
    """Why this streamcomp build cannot take ``max_error`` (the keyword is new), or None."""
    try:
        from streamcomp.pipeline import RunConfig
    except ImportError as exc:
        return f"streamcomp not importable ({exc})"
    return None if "max_error" in {f.name for f in dataclasses.fields(RunConfig)} else UNSUPPORTED


def streamcomp_row(path: Path, max_error: int, chunks: str) -> dict:
    """streamcomp with bound ``max_error`` (0: lossless) on the ``.npy`` at ``path``, decoded back
    through plain zarr in this process and checked on every voxel against the source."""
    import zarr

    from streamcomp.api import compress

    original = data.load(path)
    with tempfile.TemporaryDirectory(prefix="streamcomp-lossless-") as tmp:
        dst = str(Path(tmp) / "out.zarr")
        t0 = time.perf_counter()
        res = compress(str(path), dst, max_error=max_error, executor="local", workers=1, chunks=chunks,
                       progress=False, overwrite=True)  # fmt: skip
        wall = time.perf_counter() - t0
        t1 = time.perf_counter()
        decoded = np.asarray(zarr.open_array(dst, mode="r")[...])
        dec_s = time.perf_counter() - t1
    row = score("streamcomp", original, max_error, res.stored_bytes, decoded, res.seconds or wall, dec_s)
    fit_s = res.run.get("seconds", {}).get("fit", 0.0)
    after_fit = original.size / 1e6 / max((res.seconds or wall) - fit_s, 1e-9)
    return {**row, "threads": "1 (in-process)", "encode_wall_s": wall, "reported_ratio": res.ratio, "chunks": chunks,
            "fit_s": fit_s, "encode_after_fit_mvox_s": after_fit}  # fmt: skip


def streamcomp_safe(path: Path, max_error: int, chunks: str, unsupported: str | None) -> dict:
    """:func:`streamcomp_row`, or a row saying why it did not run (a build without ``max_error``,
    or an error streamcomp raised); a bound it breaks is flagged, never hidden."""
    from streamcomp.errors import StreamcompError

    if unsupported:
        return {"codec": "streamcomp", "E": max_error, "skipped": unsupported}
    try:
        return streamcomp_row(path, max_error, chunks)
    except StreamcompError as exc:
        return {"codec": "streamcomp", "E": max_error, "skipped": f"streamcomp error: {exc}"}


# --- volumes --------------------------------------------------------------------------------------


def bounds_for(name: str) -> tuple[int, ...]:
    """The near-lossless bounds: CT's 12-bit HU range takes the larger ones too."""
    return BOUNDS + CT_EXTRA_BOUNDS if name.startswith("ct") else BOUNDS


def fit_chunks(chunks: str, shape: tuple[int, ...]) -> str:
    """``chunks`` clipped to ``shape`` (a crop smaller than one chunk is one chunk, not padding)."""
    sizes = [int(c) for c in chunks.split(",")]
    if len(sizes) != len(shape):
        raise SystemExit(f"chunks {chunks} have {len(sizes)} axes, the volume {len(shape)}")
    return ",".join(str(min(c, n)) for c, n in zip(sizes, shape, strict=True))


def source(name: str, quick: bool, bundled: bool, tmp: Path) -> tuple[np.ndarray, Path, str] | None:
    """The volume (whole, or its quick crop / bundled crop), a ``.npy`` path streamcomp can read
    holding exactly it, and a label; None (with a note) when it is not on this machine."""
    spec = VOLUMES[name]
    if not bundled and spec.path.is_file():
        crop = spec.quick_crop if quick else None
        vol = data.load(spec.path, crop)
        label = spec.file if crop is None else f"{spec.file} crop {crop}"
    elif (quick or bundled) and spec.bundled_path is not None:
        crop = data.fit_crop(spec.quick_crop, data.shape_of(spec.bundled_path)) if quick else None
        vol = data.load(spec.bundled_path, crop)
        label = f"{spec.bundled_path.name}" + (f" crop {crop}" if crop else "")
    else:
        print(f"skipped {name}: {spec.path} not found (and no bundled crop for this mode)", flush=True)
        return None
    if crop is None:
        return vol, spec.bundled_path if bundled else spec.path, label
    path = tmp / f"{name}.npy"
    np.save(path, vol)
    return vol, path, label


def study_volume(name: str, vol: np.ndarray, path: Path, chunks: str, unsupported: str | None) -> list[dict]:
    """Every row for one volume: lossless, then each bound; printed as they come."""
    rows = []
    for bound in (0, *bounds_for(name)):
        codecs = lossless_codecs() if bound == 0 else near_codecs()
        for codec in codecs:
            rows.append(_echo(name, run_codec(codec, vol, bound)))
        rows.append(_echo(name, streamcomp_safe(path, bound, chunks, unsupported)))
    return rows


def _echo(vname: str, row: dict) -> dict:
    if "skipped" in row:
        print(f"{vname:10s} E={row['E']:<2d} {row['codec']:24s} skipped: {row['skipped']}", flush=True)
        return row
    flag = "  BOUND VIOLATED" if row["violation"] else ""
    print(
        f"{vname:10s} E={row['E']:<2d} {row['codec']:24s} ratio {row['ratio']:7.3f}  "
        f"{row['bits_per_voxel']:6.3f} b/vox  "
        f"maxerr {row['max_error']:3d}  enc {row['encode_mvox_s']:7.2f}  dec {row['decode_mvox_s']:7.2f} Mvox/s{flag}",
        flush=True,
    )
    return row


# --- report ---------------------------------------------------------------------------------------


def _cell(row: dict) -> str:
    if "skipped" in row:
        return f"| {row['codec']} | {row['E']} | skipped: {row['skipped']} |" + " |" * 7
    err = f"**{row['max_error']} > E: VIOLATION**" if row["violation"] else str(row["max_error"])
    psnr = "exact" if row["max_error"] == 0 else f"{row['psnr']:.2f}"
    after = f"{row['encode_after_fit_mvox_s']:.2f}" if "encode_after_fit_mvox_s" in row else "-"
    return (
        f"| {row['codec']} | {row['E']} | {row['ratio']:.3f} | {row['bits_per_voxel']:.3f} | {err} | {psnr} | "
        f"{row['encode_mvox_s']:.2f} | {after} | {row['decode_mvox_s']:.2f} | {row['threads']} |"
    )


def table(rows: list[dict]) -> str:
    """A volume's rows as a markdown table."""
    head = [
        "| codec | E | ratio | bits/voxel | max \\|error\\| | PSNR dB | enc Mvox/s | after the fit | dec Mvox/s "
        "| threads |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    return "\n".join(head + [_cell(r) for r in rows])


def _ratio(rows: list[dict], codec: str, bound: int) -> float | None:
    hit = [r for r in rows if r["codec"] == codec and r["E"] == bound and "ratio" in r]
    return hit[0]["ratio"] if hit else None


def _over(a: float | None, b: float | None) -> str:
    return f"{a / b:.3f}x" if a and b else "n/a"


def summary(name: str, rows: list[dict]) -> str:
    """streamcomp's lossless ratio over JPEG XL e7's, and over JPEG-LS's at each bound."""
    lossless = _over(_ratio(rows, "streamcomp", 0), _ratio(rows, f"JPEG XL e{JXL_EFFORTS[0]}", 0))
    near = ", ".join(
        f"E={e}: {_over(_ratio(rows, 'streamcomp', e), _ratio(rows, 'JPEG-LS', e))}" for e in bounds_for(name)
    )
    jxl = f"JPEG XL e{JXL_EFFORTS[0]}"
    return f"{name}: streamcomp lossless ratio / {jxl}'s = {lossless}; streamcomp / JPEG-LS near-lossless: {near}"


def violations(results: dict) -> list[str]:
    return [
        f"{name} {r['codec']} E={r['E']}: max |error| {r['max_error']}"
        for name, v in results["volumes"].items()
        for r in v["rows"]
        if r.get("violation")
    ]


CODEC_NOTES = [
    "per-slice codecs (JPEG XL, JPEG-LS, HTJ2K, PNG) code every 2D slice (4D: every (t, z) slice) "
    "as its own stream; stored bytes = streams + 4 B offset per slice + shape/dtype header + 16 B "
    "offset/scale when the data was shifted to unsigned (signed CT: x - min)",
    "JPEG XL: `jpegxl_encode(s, effort=e, distance=0, lossless=True, bitspersample=<bits needed>, "
    "numthreads=1)`, decoded with `numthreads=1`",
    "JPEG-LS (CharLS): `jpegls_encode(s, level=E)`, level = NEAR (0 = lossless); imagecodecs sets "
    "bits_per_sample from the itemsize (16 for 12-bit CT, which costs JPEG-LS a little)",
    "HTJ2K (OpenJPH): `htj2k_encode(s, reversible=True)`; PNG: `png_encode(s, level=9)`",
    "zstd level 19 and blosc (zstd 9, bit-shuffle, 1 thread) on the raw bytes + header (numcodecs)",
    "SZ3 (pysz): absolute bound E on float32, whole array at once, OpenMP off; decoded values rounded "
    "to the integer dtype, ratio against the integer bytes, + header",
    "streamcomp: `compress(npy, dst, max_error=E, executor='local', chunks=..., progress=False, "
    "overwrite=True)`; stored bytes as it reports them; decode = `zarr.open_array(dst)[...]`; "
    "it runs in-process with one torch thread and a one-thread zarr pool; its times include reading "
    "the .npy and writing/reading the zarr store; \"after the fit\": its encode without the fit phase "
    "(near-lossless arrays fit a context model for their levels on a bounded sample: a fixed ~0.5-1 s)",
]


def markdown(results: dict) -> str:
    """The report: machine, versions, codec settings, one table and summary per volume."""
    m = results["machine"]
    versions = {**m["versions"], **m.get("codec_libraries", {})}
    md = [
        "# Lossless and near-lossless coding: streamcomp vs standard codecs\n",
        f"machine: {m['cpu_model']}, {m['usable_cores']} usable cores, {m['ram_gib']} GiB, load at start "
        f"{m['load_average_at_start']} ({m['note']})\n",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + "\n",
        f"settings: `{json.dumps(results['settings'])}`, total {results['total_s']:.0f} s\n",
        "ratio = raw bytes / stored bytes; PSNR peak = max - min of the volume; every codec single-threaded.\n",
        "\n".join(f"- {n}" for n in CODEC_NOTES + results["notes"]) + "\n",
    ]
    for name, v in results["volumes"].items():
        md += [f"\n## {name}: {v['label']} ({v['dtype']}, {'x'.join(map(str, v['shape']))})\n", table(v["rows"]), "",
               v["summary"], ""]  # fmt: skip
    return "\n".join(md)


def plot(results: dict, path: Path) -> bool:
    """Ratio vs max error per volume, every near-lossless codec (E = 0 is its lossless point)."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vols = results["volumes"]
    fig, axes = plt.subplots(1, len(vols), figsize=(4.5 * len(vols), 4), squeeze=False)
    for ax, (name, v) in zip(axes[0], vols.items(), strict=True):
        for codec in NEAR_CODECS:
            pts = sorted((r["E"], r["ratio"]) for r in v["rows"] if r["codec"] == codec and "ratio" in r)
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=codec)
        ax.set_xscale("symlog", linthresh=1)
        ticks = sorted({r["E"] for r in v["rows"]})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set(title=name, xlabel="max error E (0 = lossless)", ylabel="compression ratio")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --- main -----------------------------------------------------------------------------------------


def single_threaded() -> dict[str, Any]:
    """Pin every library that would spread over cores to one thread, so Mvox/s is per core."""
    import numcodecs.blosc
    import zarr

    numcodecs.blosc.set_nthreads(1)
    zarr.config.set({"threading.max_workers": 1})  # before zarr creates its pool
    return {"blosc_threads": 1, "zarr_max_workers": 1, "torch_threads": torch_threads(1)}


def codec_libraries() -> dict[str, str]:
    """The versions of the C libraries imagecodecs and numcodecs wrap, for the report."""
    import imagecodecs
    import numcodecs.blosc

    wanted = {"libjxl", "charls", "openjph", "libpng", "zlib"}
    libs = dict(p.rsplit("-", 1) for p in str(imagecodecs.version()).split(", ") if "-" in p)
    return {**{k: v for k, v in libs.items() if k in wanted}, "numcodecs c-blosc": numcodecs.blosc.VERSION_STRING}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.lossless", description=__doc__.split("\n")[0])
    ap.add_argument("--volumes", default=",".join(VOLUMES), help=f"comma-separated, of {', '.join(VOLUMES)}")
    ap.add_argument("--quick", action="store_true", help="small crops (a smoke run; output in a temp folder)")
    ap.add_argument("--bundled", action="store_true", help="the crops shipped in tests/data and examples/")
    ap.add_argument("--chunks3d", default=DEFAULT_CHUNKS[3], help="streamcomp chunks for 3D volumes")
    ap.add_argument("--chunks4d", default=DEFAULT_CHUNKS[4], help="streamcomp chunks for 4D volumes")
    ap.add_argument("--out", help="output folder (default benchmarks/results; --quick: a temp folder)")
    args = ap.parse_args(argv)
    unknown = set(args.volumes.split(",")) - set(VOLUMES)
    if unknown:
        ap.error(f"unknown volumes {sorted(unknown)}; choose from {', '.join(VOLUMES)}")
    return args


def warm_up(vol: np.ndarray, tmp: Path) -> str:
    """Run streamcomp once on a small crop of ``vol`` (lossless and E = 8), so that its rows time
    steady-state coding: a process's first call loads its compiled kernels (compiles them, the
    first time after an install). Returns the note that says what that cost."""
    crop = np.ascontiguousarray(vol[tuple(slice(0, min(n, 64)) for n in vol.shape)])
    path = tmp / "warm_up.npy"
    np.save(path, crop)
    t0 = time.perf_counter()
    for max_error in (0, 8):
        streamcomp_row(path, max_error, ",".join(str(n) for n in crop.shape))
    return (
        f"streamcomp warmed up first (lossless and E = 8 on a {'x'.join(map(str, crop.shape))} crop): "
        f"{time.perf_counter() - t0:.1f} s, a process's one-off cost of loading its compiled kernels"
    )


def run_all(args: argparse.Namespace, tmp: Path, notes: list[str]) -> dict[str, dict]:
    """Every requested volume on this machine, with its rows and summary."""
    unsupported = streamcomp_unsupported()
    if unsupported:
        print(unsupported, flush=True)
        notes.append(unsupported)
    out, warm = {}, unsupported is not None
    for name in args.volumes.split(","):
        got = source(name, args.quick, args.bundled, tmp)
        if got is None:
            notes.append(f"{name}: not on this machine, skipped")
            continue
        vol, path, label = got
        if not warm:
            notes.append(warm_up(vol, tmp))
            warm = True
        chunks = fit_chunks(args.chunks4d if vol.ndim == 4 else args.chunks3d, vol.shape)
        rows = study_volume(name, vol, path, chunks, unsupported)
        out[name] = {"label": label, "shape": list(vol.shape), "dtype": str(vol.dtype), "chunks": chunks,
                     "rows": rows, "summary": summary(name, rows)}  # fmt: skip
        print(table(rows) + "\n\n" + out[name]["summary"] + "\n", flush=True)
    return out


def main(argv: list[str] | None = None) -> Path:
    args = _parse(argv)
    out = data.out_dir("", args.quick, args.out)
    threads = single_threaded()
    results: dict = {
        "machine": machine(**threads, codec_libraries=codec_libraries()),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "notes": [],
    }
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lossless-src-") as tmp:
        results["volumes"] = run_all(args, Path(tmp), results["notes"])
    results["total_s"] = time.perf_counter() - t0
    write_json(out / "lossless.json", results)
    (out / "lossless.md").write_text(markdown(results))
    drew = plot(results, out / "lossless.png")
    print(f"wrote {out / 'lossless.json'}, .md{', .png' if drew else ''} in {results['total_s']:.1f} s")
    bad = violations(results)
    if bad:
        raise SystemExit("error bound violated: " + "; ".join(bad))
    return out


if __name__ == "__main__":
    main()
