"""Scale and faults on object storage: S3 in, sharded S3 out, memory flat as the volume grows,
nothing lost when a worker or the driver is SIGKILLed.

    python -m benchmarks.studies.scale                              # 1 and 8 GiB sweep + the two kills
    python -m benchmarks.studies.scale --sizes-mib 64 --kill-mib 32 --quick   # a smoke run
    python -m benchmarks.studies.scale --sizes-mib 256 --kill-mib 0 --engines pool data  # the two engines

A moto S3 server on 127.0.0.1 holds both buckets. Sources are the real ISBI 2012 EM stack tiled with
flips, rolls and offsets (:func:`benchmarks.studies.pipeline_memory.make_source`) written to
``s3://src`` by a child process. The sweep compresses each size into ``s3://out`` with shards of a
fixed shape (``--shards``; ``auto`` grows them with the volume, and a task's memory with them) on an embedded
Ray with the data path's fastest setting (``nerf``, 2 Adam steps: quality is not what is measured)
and samples the summed RSS of the driver and all its descendants (the S3 server excluded). The
fault runs use ``--lossless`` (deterministic, so "identical" means equal bytes and equal decoded
voxels) on ``--kill-mib``: an uninterrupted reference; a run with one encoder actor SIGKILLed once
shards are being written; a run whose driver is SIGKILLed, then rerun with ``--resume``. Results go
to ``scale.{json,md}`` in ``--out`` (default ``benchmarks/results/``; ``--quick``: a temp folder).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from benchmarks import data
from benchmarks.memory import RssSampler
from benchmarks.studies.common import machine, write_json
from benchmarks.studies.pipeline_memory import CHUNKS, PARAMS
from benchmarks.volumes import VOLUMES

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "scale-bench", "AWS_SECRET_ACCESS_KEY": "scale-bench",
               "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
KILL_SHARDS = "16,512,512"  # 4 MiB of raw data a shard: many shards on a small fault volume
SWEEP_SHARDS = "256,512,512"  # 64 MiB a shard at every size, so per-task memory is the same in every row
BIN = Path(sys.executable).parent


class LoopbackS3:
    """moto's S3 server on 127.0.0.1, stopped by its PID."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError("moto_server did not start within 60 s")
        os.environ.update(CREDENTIALS)
        self.options = {"endpoint_url": self.endpoint}
        self.fs = self._fs()
        for bucket in ("src", "out"):
            self.fs.mkdir(bucket)

    def _fs(self):
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint)

    def objects(self, prefix: str) -> list[str]:
        self.fs.invalidate_cache()
        return [p for p in self.fs.find(prefix) if not p.endswith("zarr.json")]

    def count(self, prefix: str) -> int:
        self.fs.invalidate_cache()
        return len(self.fs.find(prefix))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def upload(s3: LoopbackS3, src: str, mib: int, em_path: Path, seed: int = 0) -> tuple[int, ...]:
    """Write the tiled source in a child process, so its buffers do not count in the driver's RSS."""
    code = ("import json, sys, numpy as np; from benchmarks.studies.pipeline_memory import make_source; "
            f"print(json.dumps(make_source({src!r}, {mib}, np.load({str(em_path)!r}, mmap_mode='r'), {seed}, "
            f"{s3.options!r})))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return tuple(json.loads(proc.stdout.strip().splitlines()[-1]))


def sweep_row(
    s3: LoopbackS3, mib: int, workers: int, em_path: Path, shards: str, engine: str = "pool", method: str = "nerf"
) -> dict:
    """One sweep point: ``nerf`` in the fast setting (chunks CHUNKS, ratio 40), or ``method`` as a
    user runs it (its default parameters and chunks, ratio 8, EM's usual)."""
    from streamcomp.api import compress

    src, dst = f"s3://src/em_{mib}.zarr", f"s3://out/em_{mib}.zarr"
    t = time.perf_counter()
    shape = upload(s3, src, mib, em_path)
    upload_s = time.perf_counter() - t
    t = time.perf_counter()
    with RssSampler(exclude=frozenset({s3.proc.pid})) as sampler:
        fast = method == "nerf"
        result = compress(src, dst, method=method, ratio=40 if fast else 8, chunks=CHUNKS if fast else None,
                          method_params=PARAMS if fast else None, shards=shards, workers=workers, executor="ray",
                          engine=engine, storage_options=s3.options, progress=True)
    wall = time.perf_counter() - t
    raw = int(np.prod(shape))
    row = {
        "size_mib": round(raw / 2**20, 1), "shape": list(shape), "chunks": result.run["chunks_total"],
        "shards": result.run["chunks_todo"], "shard_shape": shards, "objects": s3.count(dst),
        "workers": result.run["workers"], "engine": engine, "method": method,
        "actors_used": len(result.run["worker_pids"]),
        "ratio": round(result.ratio, 2), "upload_s": round(upload_s, 1), "wall_s": round(wall, 1),
        "encode_s": result.run["seconds"]["encode"],
        "encode_mvox_s": round(result.run["voxels_per_second"] / 1e6, 3),
        "mvox_s_per_core": round(raw / wall / 1e6 / result.run["workers"], 3),
        "peak_rss_all_mib": round(sampler.peak_total / 2**20, 1),
        "peak_rss_actors_mib": round(sampler.peak_workers / 2**20, 1),
        "peak_rss_driver_mib": round(sampler.peak_driver / 2**20, 1),
    }
    s3.fs.rm(src, recursive=True)
    s3.fs.rm(dst, recursive=True)
    return row


def cli(s3: LoopbackS3, src: str, dst: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "streamcomp.cli", "compress", src, dst, "--lossless", "--chunks",
            ",".join(map(str, CHUNKS)), "--shards", KILL_SHARDS, "--executor", "ray", "--workers", "2",
            "--endpoint-url", s3.endpoint, "--quiet", *extra]


def digest(s3: LoopbackS3, dst: str) -> tuple[str, str]:
    """(hash of every stored shard's bytes, hash of the decoded array)."""
    import zarr

    h = hashlib.sha256()
    for key in sorted(s3.objects(dst)):
        h.update(key.split("/", 2)[-1].encode() + s3.fs.cat(key))
    arr = zarr.open_array(dst, mode="r", storage_options=s3.options)
    decoded = hashlib.sha256()
    for z in range(0, arr.shape[0], CHUNKS[0]):
        decoded.update(np.ascontiguousarray(arr[z : z + CHUNKS[0]]).tobytes())
    return h.hexdigest(), decoded.hexdigest()


def wait_shards(s3: LoopbackS3, dst: str, n: int, proc: subprocess.Popen, timeout: float = 600) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if s3.fs.exists(dst) and len(s3.objects(dst)) >= n:
            return len(s3.objects(dst))
        time.sleep(0.5)
    raise RuntimeError(f"{dst}: {n} shards were not written in time (driver exit code {proc.poll()})")


def manifest_run(s3: LoopbackS3, dst: str) -> dict:
    return json.loads(s3.fs.cat(dst + ".manifest.json"))["run"]


def fault_rows(s3: LoopbackS3, mib: int, em_path: Path) -> list[dict]:
    import psutil

    src = f"s3://src/fault_{mib}.zarr"
    upload(s3, src, mib, em_path, seed=1)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    ref = "s3://out/fault_ref.zarr"
    t = time.perf_counter()
    subprocess.run(cli(s3, src, ref), env=env, check=True, timeout=3600)
    ref_s, reference = time.perf_counter() - t, digest(s3, ref)
    total = manifest_run(s3, ref)["chunks_todo"]
    rows = [{"run": "uninterrupted", "shards": total, "wall_s": round(ref_s, 1), "lost": 0, "encoded_twice": 0,
             "identical": True}]

    dst = "s3://out/fault_worker.zarr"
    t = time.perf_counter()
    driver = subprocess.Popen(cli(s3, src, dst), env=env)
    wait_shards(s3, dst, max(2, total // 4), driver)
    actors = [p for p in psutil.Process(driver.pid).children(recursive=True) if "ChunkWorker" in " ".join(p.cmdline())]
    actors[0].send_signal(signal.SIGKILL)
    driver.wait(3600)
    run = manifest_run(s3, dst)
    rows.append({"run": "worker SIGKILLed", "shards": total, "wall_s": round(time.perf_counter() - t, 1),
                 "exit_code": driver.returncode, "lost": total - run["chunks_encoded"] - run["chunks_skipped"],
                 "resubmitted": run["resubmitted"], "identical": digest(s3, dst) == reference})

    dst = "s3://out/fault_driver.zarr"
    driver = subprocess.Popen(cli(s3, src, dst), env=env)
    written = wait_shards(s3, dst, max(2, total // 3), driver)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    time.sleep(2)
    before = len(s3.objects(dst))
    subprocess.run(cli(s3, src, dst, "--resume"), env=env, check=True, timeout=3600)
    run = manifest_run(s3, dst)
    rows.append({"run": "driver SIGKILLed, rerun --resume", "shards": total, "at_kill": max(written, before),
                 "lost": total - run["chunks_encoded"] - run["chunks_skipped"],
                 "encoded_twice": before - run["chunks_skipped"], "skipped": run["chunks_skipped"],
                 "identical": digest(s3, dst) == reference})
    return rows


def table(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r if k != "shape"))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.studies.scale", description=__doc__.splitlines()[0])
    p.add_argument("--sizes-mib", type=int, nargs="+", default=[1024, 8192], help="sweep sizes")
    p.add_argument("--kill-mib", type=int, default=256, help="fault-run size (0: no fault runs)")
    p.add_argument("--shards", default=SWEEP_SHARDS, help="the sweep's shard shape, or auto")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--engines", nargs="+", default=["pool"], choices=("pool", "data"),
                   help="sweep each size with each engine (--engine of the CLI)")
    p.add_argument("--method", default="nerf",
                   help="sweep method: nerf (fast setting, the default) or any method at its defaults (ratio 8)")
    p.add_argument("--name", default="scale", help="output file stem (scale: the committed sweep)")
    p.add_argument("--quick", action="store_true", help="write results to a temp folder")
    p.add_argument("--bundled", action="store_true", help="tile the EM sample in examples/ instead of the stack")
    p.add_argument("--out", help="output folder (default benchmarks/results; --quick: a temp folder)")
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    spec = VOLUMES["em"]
    path = (spec.bundled_path if args.bundled else None) or spec.path
    em_path = data.require(path)
    fast = args.method == "nerf"
    doc = {"machine": machine(), "method": args.method, "params": PARAMS if fast else "defaults",
           "chunks": CHUNKS if fast else "the method's default", "source": path.name, "sweep": [], "faults": []}
    s3 = LoopbackS3()
    try:
        for mib in args.sizes_mib:
            for engine in args.engines:
                doc["sweep"].append(sweep_row(s3, mib, args.workers, em_path, args.shards, engine, args.method))
                print(json.dumps(doc["sweep"][-1]), flush=True)
        if args.kill_mib:
            doc["faults"] = fault_rows(s3, args.kill_mib, em_path)
            print(json.dumps(doc["faults"]), flush=True)
    finally:
        s3.stop()
    out = data.out_dir("", args.quick, args.out)
    write_json(out / f"{args.name}.json", doc)
    info = doc["machine"]
    md = [
        "# Scale and faults on object storage (loopback S3)", "",
        f"Machine: {info['cpu_model']}, {info['logical_cores']} cores, {info['ram_gib']} GiB, GPU: {info['gpu']}; "
        f"load average at start {info['load_average_at_start']}.",
        f"Sweep: `{doc['source']}` tiled, s3://src -> s3://out (moto on 127.0.0.1), `{args.method}` "
        + (f"{json.dumps(PARAMS)}, chunks {'x'.join(map(str, CHUNKS))}, ratio 40" if fast else
           "at its default parameters and chunks, ratio 8")
        + f", `--shards {args.shards}`, embedded Ray. RSS: peak of the "
        "summed resident set of the driver and all its descendants (the S3 server and the upload process "
        "excluded), sampled every 0.25 s. `engine`: what fed the encode phase (`pool`: the pipeline's "
        "actors; `data`: Ray Data's autoscaling actor pool), `actors_used`: encoder processes that "
        "wrote something.", "",
        table(doc["sweep"]), "",
        f"Faults: `--lossless`, shards {KILL_SHARDS}, 2 workers, {args.kill_mib} MiB. `lost`: shards neither "
        "written nor kept; `resubmitted`: batches the pool gave a fresh actor after a kill (the batch Ray "
        "itself retried on the restarted actor is not counted: its shard is encoded twice, written once); "
        "`encoded_twice`: shards present at the driver kill yet encoded again; `identical`: stored bytes and "
        "decoded voxels equal the uninterrupted run's.",
        "", table(doc["faults"]) if doc["faults"] else "(not run)", "",
    ]
    (out / f"{args.name}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
