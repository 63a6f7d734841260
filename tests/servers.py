"""Real servers for the pipeline and source tests: a local Ray head and a moto S3 server, on loopback.

Both are started the way users start them (``ray start --head``, ``moto_server``) as subprocesses
and stopped by the PIDs this module started (never ``ray stop``, which would end every Ray
process on the machine, other people's included).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
# The head node's own credentials (as a cluster config gives its nodes), distinct from the driver's:
# the pipeline never forwards credentials, so its workers on the head use these.
NODE_S3_ENV = {"AWS_ACCESS_KEY_ID": "AKIANODE7Q3XW9", "AWS_SECRET_ACCESS_KEY": "node-secret-5f1c9e",
               "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str, interval: float = 0.5):
    """Poll ``check()`` until it returns something truthy, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")


def _http_ok(url: str) -> bool:
    """Whether an HTTP server answers at ``url`` (any status below 500, 401 included)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except Exception:
        return False


def stop_tree(proc: subprocess.Popen, extra: list[psutil.Process] = ()) -> None:
    """SIGTERM then SIGKILL a process we started and its descendants, by PID."""
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    procs = [p for p in extra if p.pid not in mine]
    try:
        root = psutil.Process(proc.pid)
        procs = [root, *root.children(recursive=True), *procs]
    except psutil.NoSuchProcess:
        pass
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


@dataclass
class RayHead:
    gcs_address: str  # 127.0.0.1:PORT, for ray.init / RAY_ADDRESS
    dashboard: str  # http://127.0.0.1:PORT, for ray job submit and the state API
    temp_dir: str
    proc: subprocess.Popen

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        env["RAY_AUTH_MODE"] = "token"  # Ray 2.60 heads require the token (~/.ray/auth_token)
        return {**env, **extra}

    def session_processes(self) -> list[psutil.Process]:
        """Every process of this head's session (their command lines name its temp dir)."""
        out = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(self.temp_dir in part for part in p.info["cmdline"] or ()):
                    out.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return out

    def submit(self, args: list[str], env_vars: dict[str, str] | None = None, wait: bool = False) -> str:
        """``ray job submit --working-dir .`` from the repository root; returns the job id."""
        import json

        job_id = f"t{os.getpid()}_{int(time.time() * 1000) % 10**8}"
        cmd = [str(BIN / "ray"), "job", "submit", "--address", self.dashboard, "--working-dir", ".",
               "--submission-id", job_id]
        if env_vars:
            cmd += ["--runtime-env-json", json.dumps({"env_vars": env_vars})]
        if not wait:
            cmd.append("--no-wait")
        cmd += ["--", "python", *args]
        # A head whose job agent is still starting (slow on a loaded machine) answers "No available
        # agent to submit job, please try again later": try again, a bounded number of times.
        for _ in range(6):
            proc = subprocess.run(cmd, cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=600)
            if proc.returncode == 0 or "No available agent" not in proc.stdout + proc.stderr:
                break
            time.sleep(5)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return job_id

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard)

    def wait_job(self, job_id: str, timeout: float = 600) -> str:
        from ray.job_submission import JobStatus

        client = self.client()
        terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
        status = wait_for(lambda: (s := client.get_job_status(job_id)) in terminal and s, timeout, f"job {job_id}", 1)
        return str(status.value if hasattr(status, "value") else status)

    def logs(self, job_id: str) -> str:
        return self.client().get_job_logs(job_id)

    def alive_actor_pids(self, class_name: str = "ChunkWorker") -> list[int]:
        from ray.util.state import list_actors

        actors = list_actors(
            address=self.dashboard, filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")]
        )
        return [a.pid for a in actors if a.pid]


@pytest.fixture(scope="session")
def ray_head():
    """A real local Ray head on loopback with 2 CPUs and a dashboard (job submission)."""
    port, dash = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="scray_", dir="/tmp")  # short: Ray's socket paths are limited
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(NODE_S3_ENV)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env["RAY_AUTH_MODE"] = "token"  # the default of `ray start`; clients must then say so too
    saved_auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "token"  # the job client and state API in this process
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--port", str(port), "--node-ip-address", "127.0.0.1",
           "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--include-dashboard", "true",
           "--num-cpus", "2", "--num-gpus", "0", "--object-store-memory", str(200 * 2**20),
           "--temp-dir", temp_dir, "--disable-usage-stats"]
    # `ray start` needs the token to exist (ray.init makes one, `ray start` does not): on a fresh
    # machine whose first Ray is this head, make it the way Ray does (no-op when it exists).
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    log = open(os.path.join(temp_dir, "ray_start.log"), "w")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    head = RayHead(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", temp_dir, proc)
    try:
        wait_for(lambda: proc.poll() is not None or _http_ok(f"{head.dashboard}/api/version"), 120, "ray head start")
        if proc.poll() is not None:
            raise RuntimeError(f"ray start failed: {Path(log.name).read_text()[-2000:]}")
        yield head
    finally:
        stop_tree(proc, head.session_processes())
        log.close()
        if saved_auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved_auth
        shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass
class S3Server:
    endpoint: str
    proc: subprocess.Popen

    @property
    def options(self) -> dict[str, str]:
        return {"endpoint_url": self.endpoint}

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint, key="testing", secret="testing")


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-protocol server (moto's) on loopback; credentials through AWS_* environment variables."""
    port = free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{port}", proc)
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    try:
        wait_for(lambda: proc.poll() is not None or _http_ok(f"{server.endpoint}/moto-api/"), 60, "moto start", 0.2)
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"moto_server failed: {log.read()[-2000:]!r}")
        yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        stop_tree(proc)
        log.close()
