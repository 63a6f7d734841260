"""Peak memory of one codec call: in-process high-water RSS, and the peak RSS of child processes.

What is measured, exactly (so the report can say it):

- in-process codecs (imagecodecs, zfpy, pysz, numcodecs, torch): Linux lets a process reset its
  resident-set high-water mark (``echo 5 > /proc/self/clear_refs``), so before each call freed heap
  is handed back to the OS (``gc.collect()`` and glibc ``malloc_trim(0)``, so the call cannot hide
  its needs in memory an earlier call left mapped), the mark is reset, and afterwards
  ``VmHWM - VmRSS(before)`` is the call's peak *additional* resident memory (the input volume,
  already resident, is excluded; the decoded output and all codec buffers, including those of C
  libraries, are included). ``VmHWM`` itself is also kept: the whole worker process's peak during
  the call (interpreter, numpy, torch... included), an upper bound. Where the reset is not allowed
  the mark since process start is reported instead, flagged ``resettable=False``.
- external tools (ffmpeg): each child is reaped with ``os.wait4``, whose ``ru_maxrss`` is that
  child's own peak RSS (absolute: it includes the ffmpeg binary and its libraries).
- a whole process tree (the Ray pipeline): :class:`RssSampler` polls the summed RSS of this process
  and its descendants.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"
_TMP = "/dev/shm" if os.path.isdir("/dev/shm") else None


def _status_kib(key: str) -> int | None:
    try:
        with open(_STATUS) as fh:
            match = re.search(rf"^{key}:\s+(\d+)\s+kB", fh.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _trim_heap() -> None:
    """Return freed memory to the OS so an earlier call's leftovers do not absorb this one's peak."""
    gc.collect()
    # Without glibc the delta may undercount memory reused from earlier calls.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_hwm() -> bool:
    try:
        with open(_CLEAR_REFS, "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


@dataclass
class _ChildPeak:
    """Largest ``ru_maxrss`` (KiB) of the children reaped since the last reset."""

    kib: int = 0


_CHILDREN = _ChildPeak()


def run_child(cmd: Sequence[str], stdin: bytes, timeout: float | None = None) -> bytes:
    """Run ``cmd`` with ``stdin`` and return its stdout, recording the child's peak RSS.

    Input and output go through unnamed temporary files (in /dev/shm where present) rather than
    pipes, so the child can be reaped with ``os.wait4`` for its own resource usage without the
    pipe-buffer deadlocks of a hand-rolled ``communicate``.
    """
    with (
        tempfile.TemporaryFile(dir=_TMP) as fin,
        tempfile.TemporaryFile(dir=_TMP) as fout,
        tempfile.TemporaryFile(dir=_TMP) as ferr,
    ):
        fin.write(stdin)
        fin.seek(0)
        proc = subprocess.Popen(list(cmd), stdin=fin, stdout=fout, stderr=ferr)
        killer = threading.Timer(timeout, proc.kill) if timeout is not None else None
        if killer is not None:
            killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # reaps the child: Popen must not wait() it
        finally:
            if killer is not None:
                killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        _CHILDREN.kib = max(_CHILDREN.kib, int(usage.ru_maxrss))
        ferr.seek(0)
        err = ferr.read().decode(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}: {err.strip()[-800:]}")
        fout.seek(0)
        return fout.read()


@dataclass
class PeakMemory:
    """Context manager measuring the peak memory of the enclosed block (see module docstring)."""

    delta_mib: float = 0.0
    process_peak_mib: float = 0.0
    child_peak_mib: float | None = None
    resettable: bool = False
    _before_kib: int = field(default=0, repr=False)

    def __enter__(self) -> PeakMemory:
        _CHILDREN.kib = 0
        _trim_heap()
        self.resettable = _reset_hwm()
        self._before_kib = _status_kib("VmRSS") or 0
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        hwm = _status_kib("VmHWM") or 0
        self.process_peak_mib = hwm / 1024
        self.delta_mib = max(0, hwm - self._before_kib) / 1024
        self.child_peak_mib = _CHILDREN.kib / 1024 if _CHILDREN.kib else None

    def as_dict(self) -> dict[str, float | bool | None]:
        return {
            "rss_delta_mib": round(self.delta_mib, 2),
            "process_peak_rss_mib": round(self.process_peak_mib, 2),
            "child_peak_rss_mib": None if self.child_peak_mib is None else round(self.child_peak_mib, 2),
            "rss_resettable": self.resettable,
        }


class RssSampler(threading.Thread):
    """Peak summed RSS of this process and all its descendants (driver, raylet, GCS, workers), and
    of the Ray worker processes (``ray::`` / ``ChunkWorker``) alone, sampled every ``interval`` s.

    Use it around a call that spawns processes (a Ray run), where :class:`PeakMemory`, which sees
    this process only, would miss most of the memory.
    """

    def __init__(self, interval: float = 0.25, exclude: frozenset[int] = frozenset()) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.exclude = exclude  # PIDs of helper servers this process started (a loopback S3 server)
        self.peak_total = 0
        self.peak_workers = 0
        self.peak_driver = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._halt.is_set():
            total = workers = 0
            try:
                procs = [me, *me.children(recursive=True)]
            except psutil.NoSuchProcess:
                procs = [me]
            for p in procs:
                if p.pid in self.exclude:
                    continue
                try:
                    rss = p.memory_info().rss
                    name = " ".join(p.cmdline()[:1])
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                total += rss
                if "ChunkWorker" in name or "ray::" in name:
                    workers += rss
            self.peak_driver = max(self.peak_driver, me.memory_info().rss)
            self.peak_total = max(self.peak_total, total)
            self.peak_workers = max(self.peak_workers, workers)
            self.samples += 1
            self._halt.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self.join()
