"""A driver killed with SIGKILL leaves no process of its embedded Ray behind (the watchdog that
start_ray launches ends them), and a Ray the driver did not start (the loopback head) is untouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import psutil
import pytest
from helpers import SAMPLE, command_line
from servers import BIN, ROOT, stop_tree, wait_for


def running(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


def encoder_workers(tree: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in tree if "ChunkWorker" in command_line(p)]


@pytest.mark.slow
def test_sigkilled_driver_leaves_no_embedded_ray_process(ray_head, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [str(BIN / "streamcomp"), "compress", str(SAMPLE), str(tmp_path / "out.zarr"), "--workers", "2",
           "--executor", "ray", "--chunks", "8,64,64", "--method", "siren", "--params",
           json.dumps({"steps": 200, "batch": 4096}), "-q"]
    head = [p for p in ray_head.session_processes() if any(n in p.name() for n in ("gcs_server", "raylet"))]
    assert len(head) == 2
    driver = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    tree: list[psutil.Process] = []
    try:
        def workers_up() -> bool:
            tree[:] = psutil.Process(driver.pid).children(recursive=True)
            return len(encoder_workers(tree)) == 2

        wait_for(lambda: driver.poll() is not None or workers_up(), 180, "the embedded Ray's encoder actors")
        assert driver.poll() is None, "the driver ended before it could be killed"
        tree[:] = psutil.Process(driver.pid).children(recursive=True)  # the agents, raylet, workers, watchdog
        names = " ".join(command_line(p) for p in running(tree))
        assert "DashboardAgent" in names and "raylet" in names and "watchdog.py" in names
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(10)
        wait_for(lambda: not running(tree), 20, "every process of the killed driver's Ray to exit", 0.25)
        assert len(running(head)) == len(head), "a process of the loopback head (not the driver's Ray) was killed"
    finally:
        stop_tree(driver, running(tree))
