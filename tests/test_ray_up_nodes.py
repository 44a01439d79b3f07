"""A study on a multi-node cluster that the autoscaler grows, and that loses a node midway.

The cluster is Ray's own fake multi-node provider (``FakeMultiNodeProvider``: each added node is
a real raylet with the resources of its node type, started by the autoscaler on this machine),
loaded as an external provider because this Ray wheel lacks the provider's defaults file. The
head has 1 CPU; the study (tests/cluster_study.py) trains its two models side by side on a 1-CPU
worker each, so the autoscaler must add worker nodes (2 CPUs each, at most two) before it can finish. Once training
has written its first checkpoint, one worker node is killed (its raylet and every process on it,
while the workers pause before epoch 2): the study recovers (a restore from the checkpoint, or the
stage run again), completes, and its report's numbers equal an undisturbed run's (tests/test_ray_up.py's run of the same
study, resumed across three jobs on a one-node cluster; a local run when that test did not run).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml
from cluster_study import numbers, study_args
from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
NODE_ENV = b"RAY_OVERRIDE_NODE_ID_FOR_TESTING="  # the fake provider's id of each node it adds


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes(marker: bytes, where: str = "cmdline") -> dict[int, bytes]:
    """pid -> the /proc/<pid>/<where> contents holding ``marker``."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/{where}", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        if marker in data:
            found[int(pid)] = data
    return found


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def _kill(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("fake"))
    gcs = _free_port()
    config = {
        "cluster_name": "dejavu-fake", "max_workers": 2, "upscaling_speed": 1.0, "idle_timeout_minutes": 5,
        "provider": {"type": "external", "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
                     "gcs_address": f"127.0.0.1:{gcs}", "disable_node_updaters": True, "disable_launch_config_check": True},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "cpu_worker": {"resources": {"CPU": 2}, "node_config": {}, "min_workers": 0, "max_workers": 2},
        },
        "head_node_type": "ray.head.default", "auth": {"ssh_user": "ray"},
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [],
        "rsync_filter": [], "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }
    path = os.path.join(tmp, "autoscaler.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(config, fh)
    temp = os.path.join(tmp, "ray")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_FAKE_CLUSTER="1", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               RAY_USAGE_STATS_ENABLED="0",
               # A stalled pipeline fails the test in minutes, not after Ray Data's default half hour.
               RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S="300")
    start = subprocess.run(
        [os.path.join(BIN, "ray"), "start", "--head", f"--port={gcs}", "--num-cpus=1", f"--autoscaling-config={path}",
         f"--temp-dir={temp}", "--include-dashboard=false", f"--dashboard-agent-listen-port={_free_port()}",
         f"--metrics-export-port={_free_port()}", "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stderr[-2000:]
    # Every process of this cluster inherited its token: that finds them, and only them.
    token = ("RAY_AUTH_TOKEN=" + env["RAY_AUTH_TOKEN"]).encode()
    try:
        yield {"env": env, "address": f"127.0.0.1:{gcs}", "temp": temp, "tmp": tmp, "token": token}
    finally:
        # This cluster only (`ray stop` would stop every Ray instance on the machine).
        for _ in range(2):
            _kill(_processes(token, "environ"))
            time.sleep(1)


def _study(cluster, name: str, on_line=None, local: bool = False,
           faults: str = "") -> tuple[subprocess.CompletedProcess, list[str]]:
    args = [os.path.join(BIN, "dejavu"), "run", *study_args(os.path.join(cluster["tmp"], "runs"), name)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} if local else dict(cluster["env"])
    if faults:
        env["DEJAVU_FAULTS"] = faults
    if not local:  # every raylet of this cluster runs on this machine: its local paths are shared
        args += ["--set", f"ray.address={cluster['address']}", "--set", "ray.shared_paths=true"]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if on_line:
            on_line(line)
    proc.wait(timeout=900)
    with open(os.path.join(cluster["tmp"], f"{name}.log"), "w") as fh:  # kept for a look after a failure
        fh.writelines(lines)
    return proc, lines


def _numbers(cluster, name: str) -> dict:
    runs = os.path.join(cluster["tmp"], "runs", name)
    (run,) = os.listdir(runs)
    with open(os.path.join(runs, run, "report", "report.json")) as fh:
        return numbers(json.load(fh))


def _worker_nodes(cluster) -> dict[str, list[int]]:
    """Added node id -> pids of its processes (the raylet and everything it started)."""
    nodes: dict[str, list[int]] = {}
    for pid, environ in _processes(cluster["token"], "environ").items():
        if NODE_ENV not in environ:
            continue
        node = environ.split(NODE_ENV, 1)[1].split(b"\0", 1)[0].decode()
        if node != FAKE_HEAD_NODE_ID:
            nodes.setdefault(node, []).append(pid)
    return nodes


def test_the_autoscaler_adds_nodes_a_node_is_lost_and_nothing_changes(cluster, cluster_reports):
    assert _worker_nodes(cluster) == {}  # the head alone to begin with
    killed: list[str] = []

    def kill_a_node_once_training(line: str) -> None:
        # Epoch 1's checkpoint is written and the workers pause before epoch 2 (a fault, below):
        # the node goes while training is under way, never after it.
        if killed or "pausing 12 s before epoch 2" not in line:
            return

        def kill() -> None:
            # The first worker node that runs a training worker (the autoscaler adds nodes as the
            # study asks for them, so wait for one).
            time.sleep(6)  # Ray Train commits a reported checkpoint at its controller's next poll (train.poll_s)
            deadline = time.time() + 180
            while time.time() < deadline:
                for node, pids in sorted(_worker_nodes(cluster).items()):
                    if any(b"RayTrainWorker" in _cmdline(pid) for pid in pids):
                        _kill(pids)
                        killed.append(node)
                        return
                time.sleep(0.5)

        threading.Thread(target=kill, daemon=True).start()

    proc, lines = _study(cluster, "disturbed", kill_a_node_once_training, faults="pause_train_epoch=2:12")
    assert proc.returncode == 0, "".join(lines)[-3000:]
    log = open(os.path.join(cluster["temp"], "session_latest", "logs", "monitor.log")).read()
    assert re.search(r"Adding \d+ node\(s\) of type cpu_worker", log), "the autoscaler added no worker node"
    assert killed, "no worker node ran a training worker"
    # Recovered, not merely finished: Ray Train restored a model's worker group from its last
    # checkpoint (epochs trained after a restore carry attempt >= 1), or the stage ran again.
    runs = os.path.join(cluster["tmp"], "runs", "disturbed")
    (run,) = os.listdir(runs)
    attempts = [json.loads(line)["attempt"] for model in ("model_a", "model_b")
                for line in open(os.path.join(runs, run, "train", model, "metrics.jsonl")).read().splitlines()]
    again = [ln for ln in lines if "Ray lost a node or worker" in ln]
    assert max(attempts) >= 1 or again, "the lost node left no trace of a recovery:\n" + "".join(lines)[-3000:]
    if "ray_up" in cluster_reports:
        reference = cluster_reports["ray_up"]
    else:  # this module alone: an undisturbed run on a local instance
        proc, lines = _study(cluster, "undisturbed", local=True)
        assert proc.returncode == 0, "".join(lines)[-3000:]
        reference = _numbers(cluster, "undisturbed")
    assert _numbers(cluster, "disturbed") == reference
