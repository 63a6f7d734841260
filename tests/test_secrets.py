"""No credential reaches the Ray cluster's records: not the actors' runtime_env, not their
constructor arguments, not the job or task details. Workers use their node's own credentials
(the loopback head's environment, see servers.NODE_S3_ENV); an embedded Ray's workers inherit the
driver's environment."""

from __future__ import annotations

import json
import logging
import os

import pytest
import zarr
from helpers import FAST, SAMPLE, command_line
from servers import NODE_S3_ENV, wait_for

from streamcomp.api import compress
from streamcomp.pipeline.executors import RayPool, _worker_env, start_ray, without_secrets

# The driver's own credentials: distinctive, so any copy of them in the cluster's state is found.
DRIVER_ENV = {"AWS_ACCESS_KEY_ID": "AKIADRIVER8K2M4Q", "AWS_SECRET_ACCESS_KEY": "drv-secret-3b7e1d9a",
              "AWS_SESSION_TOKEN": "drv-token-c4f08e22", "AWS_DEFAULT_REGION": "us-east-1"}
OPTION_KEY, OPTION_SECRET = "AKIAOPTION5T6Y7U", "opt-secret-91d3aa"
SECRETS = [DRIVER_ENV["AWS_ACCESS_KEY_ID"], DRIVER_ENV["AWS_SECRET_ACCESS_KEY"], DRIVER_ENV["AWS_SESSION_TOKEN"],
           OPTION_KEY, OPTION_SECRET, NODE_S3_ENV["AWS_ACCESS_KEY_ID"], NODE_S3_ENV["AWS_SECRET_ACCESS_KEY"]]


def test_secret_names_are_neither_forwarded_nor_sent_as_storage_options(monkeypatch):
    for name, value in {**DRIVER_ENV, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "GCS_OAUTH_TOKEN": "t",
                        "GOOGLE_APPLICATION_CREDENTIALS": "/k.json", "STREAMCOMP_DB_PASSWORD": "p",
                        "STREAMCOMP_CACHE": "/tmp/c", "AWS_KMS_KEY_ID": "alias/lab"}.items():
        monkeypatch.setenv(name, value)
    env = _worker_env()
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9" and env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["STREAMCOMP_CACHE"] == "/tmp/c" and env["AWS_KMS_KEY_ID"] == "alias/lab"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GCS_OAUTH_TOKEN",
                 "GOOGLE_APPLICATION_CREDENTIALS", "STREAMCOMP_DB_PASSWORD"):
        assert name not in env
    options = {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s", "token": "t", "anon": False,
               "client_kwargs": {"region_name": "eu-west-1", "aws_session_token": "t"},
               "s3_additional_kwargs": {"SSEKMSKeyId": "alias/lab"}}
    kept, dropped = without_secrets(options)
    assert kept == {"endpoint_url": "http://127.0.0.1:9", "anon": False, "client_kwargs": {"region_name": "eu-west-1"},
                    "s3_additional_kwargs": {"SSEKMSKeyId": "alias/lab"}}
    assert dropped == ["key", "secret", "token", "client_kwargs.aws_session_token"]
    assert without_secrets(None) == (None, [])


def state_text(dashboard: str) -> tuple[str, list]:
    """Everything the state API shows about this process's latest Ray job: its details, its actors,
    tasks and the runtime envs."""
    from ray.util.state import list_actors, list_jobs, list_runtime_envs, list_tasks

    mine = [j for j in list_jobs(address=dashboard, detail=True, limit=1000)
            if j.driver_info and str(j.driver_info.pid) == str(os.getpid())]
    jobs = [max(mine, key=lambda j: j.start_time or 0)]
    job_id = jobs[0].job_id
    actors = list_actors(address=dashboard, filters=[("job_id", "=", job_id)], detail=True, limit=1000)
    tasks = list_tasks(address=dashboard, filters=[("job_id", "=", job_id)], detail=True, limit=1000)
    envs = list_runtime_envs(address=dashboard, detail=True, limit=1000)
    return json.dumps([repr(x) for x in (*jobs, *actors, *tasks, *envs)]), actors


@pytest.mark.slow
def test_no_secret_in_ray_state_during_an_s3_run(s3_server, ray_head, em, monkeypatch, caplog):
    """A real run S3 -> S3 through the loopback head, with distinctive credentials in the driver's
    environment and storage options: the run completes on the node's own credentials, and no secret
    value is in the job, actor, task or runtime-env details (the endpoint, which may travel, is)."""
    for name, value in DRIVER_ENV.items():
        monkeypatch.setenv(name, value)
    fs = s3_server.fs()
    bucket = "b-secrets"
    fs.mkdir(bucket)
    try:
        src, dst = f"s3://{bucket}/raw.zarr", f"s3://{bucket}/out.zarr"
        zarr.create_array(zarr.storage.FsspecStore.from_url(src, storage_options=s3_server.options), data=em,
                          chunks=(8, 64, 64), zarr_format=2)
        so = {**s3_server.options, "key": OPTION_KEY, "secret": OPTION_SECRET}
        with caplog.at_level(logging.WARNING, logger="streamcomp"):
            result = compress(src, dst, ratio=8, chunks=(8, 64, 64), method="siren", method_params=FAST,
                              storage_options=so, ray_address=ray_head.gcs_address, workers=2, progress=False)
        assert result.run["executor"] == "ray" and result.chunks_written == result.run["chunks_total"]
        assert "storage_options key, secret not sent to the Ray workers" in caplog.text
        assert OPTION_SECRET not in caplog.text
        assert zarr.open_array(dst, storage_options=s3_server.options, mode="r").shape == em.shape
        text, actors = state_text(ray_head.dashboard)
        assert {a.class_name for a in actors} == {"ChunkWorker"} and len(actors) == 2
        assert "AWS_DEFAULT_REGION" in actors[0].serialized_runtime_env  # what runtime_env carries shows here
        for value in SECRETS:
            assert value not in text, f"a secret value is readable through the state API: {value[:8]}..."
    finally:
        fs.rm(bucket, recursive=True)


def test_embedded_ray_workers_inherit_the_driver_environment(monkeypatch, tmp_path):
    """An embedded ``ray.init(address="local")`` started by start_ray: the actors see the driver's
    credentials without any forwarding, their runtime_env holds none, and once Ray is shut down no
    process of its session (the watchdog included) is left."""
    import psutil
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for name, value in DRIVER_ENV.items():
        monkeypatch.setenv(name, value)
    assert not ray.is_initialized()
    before = {p.pid for p in psutil.Process().children(recursive=True)}  # the session-wide servers
    assert start_ray(None, 1)
    try:
        pool = RayPool(str(SAMPLE), None, 1, False)

        def observe(worker) -> tuple[dict, dict]:
            return {k: os.environ.get(k) for k in DRIVER_ENV}, dict(ray.get_runtime_context().runtime_env)

        seen, runtime_env = ray.get(pool.actors[0].__ray_call__.remote(observe))
        assert seen == DRIVER_ENV  # inherited, while the actor's recorded runtime_env holds no secret:
        assert runtime_env["env_vars"]["AWS_DEFAULT_REGION"] == "us-east-1"
        assert not set(runtime_env["env_vars"]) & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
        pool.close()
        tree = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        assert any("watchdog.py" in command_line(p) for p in tree)
    finally:
        ray.shutdown()

    def leftovers() -> list[psutil.Process]:
        return [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    wait_for(lambda: not leftovers(), 30, "the embedded Ray's processes to exit")
