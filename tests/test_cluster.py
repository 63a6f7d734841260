"""Cluster configs: the AWS launcher YAML through Ray's own validator, the KubeRay manifest's
structure, and real autoscaling on Ray's fake multi-node provider (GPU nodes appear for the
pipeline's GPU-requesting encoder actors and go away when idle)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import FAST
from servers import BIN, ROOT, RayHead, free_port, stop_tree, wait_for

CLUSTER = ROOT / "cluster"


def test_aws_launcher_config_passes_ray_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    config = prepare_config(raw)  # what `ray up` does: fill defaults, then validate against ray-schema.json
    validate_config(config)
    assert config["provider"]["type"] == "aws"
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu_types = {k: v for k, v in config["available_node_types"].items() if v["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no GPU worker type"
    for node_type in gpu_types.values():
        assert node_type["min_workers"] == 0 and node_type["max_workers"] >= 1
    assert 0 < config["idle_timeout_minutes"] <= 30
    setup = "\n".join(config["setup_commands"])
    assert "torch==" in setup and "pip install" in setup and "~/streamcomp" in setup
    assert config["file_mounts"].get("~/streamcomp") == "."


def check_raycluster_spec(spec: dict) -> None:
    """A KubeRay RayCluster spec: autoscaling, a CPU head, GPU worker groups that scale from zero."""
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    head = spec["headGroupSpec"]
    assert head["rayStartParams"].get("num-gpus") == "0"
    head_containers = head["template"]["spec"]["containers"]
    assert head_containers and "nvidia.com/gpu" not in head_containers[0]["resources"].get("limits", {})
    groups = spec["workerGroupSpecs"]
    gpu_groups = [g for g in groups
                  if any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
                         for c in g["template"]["spec"]["containers"])]
    assert gpu_groups, "no worker group with nvidia.com/gpu limits"
    for g in gpu_groups:
        assert g["minReplicas"] == 0 and g["maxReplicas"] >= 1 and g["replicas"] == 0
        assert g["groupName"] and isinstance(g["rayStartParams"], dict)
        for c in g["template"]["spec"]["containers"]:
            assert int(c["resources"]["limits"]["nvidia.com/gpu"]) == 1
            assert c["image"]


def test_kuberay_manifest_structure():
    doc = yaml.safe_load((CLUSTER / "kuberay-raycluster.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    check_raycluster_spec(doc["spec"])


def without_service_account(spec: dict) -> dict:
    """A RayCluster spec with its pods' ``serviceAccountName`` left out (to compare pod specs)."""
    spec = json.loads(json.dumps(spec))
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        group["template"]["spec"].pop("serviceAccountName", None)
    return spec


def test_kuberay_rayjob_manifest_structure():
    """The RayJob runs jobs/compress_cremi.py on the RayCluster manifest's head and GPU workers, deletes
    its cluster after the job, and takes credentials from a service account or secret, never from the
    job's runtime env."""
    sys.path.insert(0, str(ROOT / "jobs"))
    import compress_cremi

    docs = {d["kind"]: d for d in yaml.safe_load_all((CLUSTER / "kuberay-rayjob.yaml").read_text())}
    job = docs["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and 0 < spec["ttlSecondsAfterFinished"] <= 3600
    entrypoint = shlex.split(spec["entrypoint"])
    assert entrypoint[:2] == ["python", "jobs/compress_cremi.py"]
    args = compress_cremi.parse_args(entrypoint[2:])
    assert args.input.startswith("s3://") and args.output.startswith("s3://") and args.gpu is True
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert "env_vars" not in runtime_env and not re.search(r"(?i)key|secret|token|password", spec["runtimeEnvYAML"])
    cluster = spec["rayClusterSpec"]
    check_raycluster_spec(cluster)
    reference = yaml.safe_load((CLUSTER / "kuberay-raycluster.yaml").read_text())["spec"]
    assert without_service_account(cluster) == without_service_account(reference)
    account = docs["ServiceAccount"]["metadata"]["name"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        assert pod["serviceAccountName"] == account
        for c in pod["containers"]:
            assert "env" not in c  # no literal credentials in the manifest
            assert {"secretRef": {"name": "streamcomp-s3", "optional": True}} in c["envFrom"]


def fake_cluster_config(gcs_address: str, idle_minutes: float) -> dict:
    """What Ray's fake_multi_node/example.yaml (missing from the wheel) holds, with a GPU worker type."""
    return {
        "cluster_name": "fake_multinode",
        "max_workers": 2,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs_address},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "gpu_worker": {"resources": {"CPU": 1, "GPU": 1}, "node_config": {}, "min_workers": 0,
                           "max_workers": 2},
        },
        "head_node_type": "ray.head.default",
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_minutes,
        "docker": {}, "auth": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


def start_fake_autoscaling_head(idle_minutes: float = 0.1) -> RayHead:
    """`ray start --head --autoscaling-config` on loopback with the fake provider (what
    ray.cluster_utils.AutoscalingCluster does, minus its `ray stop --force`: stopped by our PIDs)."""
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="scfake_", dir="/tmp")
    config = Path(temp_dir) / "autoscaling.json"
    config.write_text(json.dumps(fake_cluster_config(f"127.0.0.1:{port}", idle_minutes)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               RAY_AUTH_MODE="token", RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--port", str(port), "--node-ip-address", "127.0.0.1",
           "--autoscaling-config", str(config), "--num-cpus", "1", "--num-gpus", "0", "--include-dashboard",
           "false", "--object-store-memory", str(100 * 2**20), "--temp-dir", temp_dir, "--disable-usage-stats"]
    log = open(os.path.join(temp_dir, "ray_start.log"), "w")  # noqa: SIM115 - closed with the head
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    return RayHead(f"127.0.0.1:{port}", "", temp_dir, proc)


def alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n["Alive"]]


@pytest.mark.slow
def test_fake_multinode_gpu_nodes_scale_up_for_the_pipeline_and_down_when_idle(tmp_path, em):
    saved_auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "token"  # before ray reads its configuration in this process
    import ray

    from streamcomp.api import compress
    from streamcomp.verify import evaluate

    src = tmp_path / "crop.npy"
    np.save(src, np.ascontiguousarray(em[:8, :64, :64]))
    head = start_fake_autoscaling_head(idle_minutes=0.1)
    try:
        log = Path(head.temp_dir, "ray_start.log")

        def connected():
            if head.proc.poll() is not None:
                raise RuntimeError(log.read_text()[-2000:])
            if "Ray runtime started" not in log.read_text():  # connecting earlier fails for good
                return False
            try:
                ray.init(address=head.gcs_address, log_to_driver=False)
                return True
            except Exception as exc:  # GCS not up yet: undo the half-done init and retry
                errors.append(repr(exc))
                ray.shutdown()
                return False

        errors: list[str] = []
        try:
            wait_for(connected, 120, "fake autoscaling head start", 2)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}: {errors[-3:]}") from exc
        assert len(alive_nodes()) == 1 and ray.cluster_resources().get("GPU", 0) == 0
        seen = {"max_nodes": 1, "max_gpus": 0.0}

        import threading

        stop = threading.Event()

        def watch():
            while not stop.is_set():
                try:
                    seen["max_nodes"] = max(seen["max_nodes"], len(alive_nodes()))
                    seen["max_gpus"] = max(seen["max_gpus"], ray.cluster_resources().get("GPU", 0))
                except Exception:
                    pass
                time.sleep(0.5)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        dst = str(tmp_path / "out.zarr")
        t0 = time.monotonic()
        result = compress(str(src), dst, ratio=8, chunks=(8, 32, 32), method="siren", method_params=FAST,
                          gpu=True, ray_address=head.gcs_address, executor="ray", progress=False)
        stop.set()
        watcher.join()
        assert result.run["gpu"] is True and result.run["executor"] == "ray"
        assert result.chunks_written == 4
        assert seen["max_nodes"] >= 2 and seen["max_gpus"] >= 1, seen  # a GPU worker node was added
        assert evaluate(str(src), dst).psnr > 15
        # idle GPU node removed after idle_timeout_minutes (6 s) plus the autoscaler's update loop
        wait_for(lambda: len(alive_nodes()) == 1, 120, "idle GPU worker node removal", 1)
        assert ray.cluster_resources().get("GPU", 0) == 0
        print(f"scale-up + job in {time.monotonic() - t0:.1f} s; peak nodes {seen['max_nodes']}")
    finally:
        ray.shutdown()
        stop_tree(head.proc, head.session_processes())
        if saved_auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved_auth
        shutil.rmtree(head.temp_dir, ignore_errors=True)
