"""A watchdog that ends an embedded Ray's processes when the driver that started them is gone.

Ray starts ``gcs_server``, ``raylet`` and its helpers as children of the driver and lets them share
its fate, but a SIGKILLed driver leaves the raylet's ``DashboardAgent`` and ``RuntimeEnvAgent``
running for good (Ray 2.60: they notice the raylet is gone, then hang on their way out). ``start``
launches this file as a separate process (its own session, so a Ctrl-C or a kill of the driver's
process group does not take it along) that reads a pipe only the driver writes to. When the pipe
ends (the driver is gone), or when the session's processes have exited by themselves (a normal
``ray.shutdown()``) and stragglers remain past a grace period, it ends what is left.

Only processes of this one session are touched: the driver's children whose command line names the
session directory, and every descendant of theirs seen while they ran (tracked as psutil
processes, so a reused PID is never hit). A Ray the driver did not start is never a child of
it, and is left alone. The file imports nothing from streamcomp: it starts in a fraction of a
second and holds only a few MiB.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time

import psutil

POLL_S = 0.5  # how often the session's process tree is re-read
GRACE_S = 5.0  # how long stragglers get after a normal shutdown before they are ended
TERM_WAIT_S = 3.0  # SIGTERM, then SIGKILL for whatever has not exited after this long


_KEEP: list[int] = []  # write ends held open for the driver's lifetime


def start(session_dir: str) -> subprocess.Popen:
    """Start the watchdog for the embedded Ray session at ``session_dir``, started by this process.

    The session's processes are named here, while the driver surely lives, as ``pid:create_time``.
    The driver keeps the pipe's write end for its whole life (the descriptor is not inheritable,
    so Ray's processes do not hold it); the kernel closes it when the driver dies, however it dies.
    """
    roots = [f"{p.pid}:{p.create_time()!r}" for p in session_roots(os.getpid(), session_dir)]
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), str(read_end), *roots],
            pass_fds=(read_end,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    _KEEP.append(write_end)
    return proc


def session_roots(driver_pid: int, session_dir: str) -> list[psutil.Process]:
    """The driver's children that belong to the session (their command lines name its directory)."""
    roots = []
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in psutil.Process(driver_pid).children():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                if any(session_dir in part for part in child.cmdline()):
                    roots.append(child)
    return roots


def track(known: dict[int, psutil.Process]) -> None:
    """Add the current descendants of every tracked process; drop the tracked ones that exited."""
    for proc in list(known.values()):
        try:
            if not proc.is_running():
                raise psutil.NoSuchProcess(proc.pid)
            for child in proc.children(recursive=True):
                known.setdefault(child.pid, child)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            known.pop(proc.pid, None)
        except psutil.AccessDenied:
            continue


def end(procs: list[psutil.Process]) -> None:
    """SIGTERM, then SIGKILL after ``TERM_WAIT_S``, the given processes (those still running)."""
    alive = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.send_signal(signal.SIGTERM)
            alive.append(proc)
    _, alive = psutil.wait_procs(alive, timeout=TERM_WAIT_S)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.kill()
    psutil.wait_procs(alive, timeout=TERM_WAIT_S)


def named(specs: list[str]) -> dict[int, psutil.Process]:
    """The processes given as ``pid:create_time`` that still run (a reused PID does not match)."""
    out = {}
    for spec in specs:
        pid, created = spec.split(":", 1)
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc = psutil.Process(int(pid))
            if proc.create_time() == float(created):
                out[proc.pid] = proc
    return out


def watch(fd: int, roots: dict[int, psutil.Process]) -> None:
    """Track the session's processes until the driver is gone, or the session is over; then end the rest."""
    known = dict(roots)
    orphaned_since: float | None = None
    while known:
        readable, _, _ = select.select([fd], [], [], POLL_S)
        if readable and not os.read(fd, 1):  # EOF: the driver is gone
            track(known)
            end(list(known.values()))
            return
        track(known)
        if any(pid in known for pid in roots):
            continue
        orphaned_since = orphaned_since or time.monotonic()  # Ray shut down; stragglers get a grace period
        if time.monotonic() - orphaned_since > GRACE_S:
            end(list(known.values()))
            return


def main(argv: list[str]) -> None:
    """``watchdog.py FD PID:CREATE_TIME...``, as :func:`start` runs it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch(int(argv[0]), named(argv[1:]))


if __name__ == "__main__":
    main(sys.argv[1:])
