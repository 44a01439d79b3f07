"""The launcher path, run for real: ``ray up`` with Ray's local (on-premise) provider logs into a
node over SSH (``ssh_node``: an OpenSSH server on 127.0.0.1 in namespaces of its own), runs
``configs/cluster-local.yaml``'s setup and start commands, and starts a head with token
authentication; studies go in with ``ray job submit`` (a job per stage, a job that fails, its
resubmission that resumes), write to the local S3 server, ``dejavu report pull`` brings the
report back, and ``ray down`` stops the cluster.

The node's ~/venv is the suite's own environment (a machine provisioned with the product's
dependencies), so the config's install step finds it and only checks it. Object-store
credentials reach the node's processes from its environment (as an instance profile would); a
planted secret must appear in no output.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml
from cluster_study import numbers, study_args
from ssh_node import free_port, start_node, unavailable
from test_object_storage import BUCKET, s3_env  # noqa: F401  (the local S3 server fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
RAY = os.path.join(BIN, "ray")
SECRET = "planted-" + secrets.token_hex(8)
STUDY = study_args(f"s3://{BUCKET}/up", "up")

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=f"ray up over SSH: {unavailable()}")


def _cluster_config(tmp: str, node, token_file: str, ports: dict) -> str:
    """configs/cluster-local.yaml with this machine's node filled in (address, key, SSH port)
    and free ports for Ray, so it runs beside whatever else this machine runs."""
    with open(os.path.join(ROOT, "configs", "cluster-local.yaml")) as fh:
        cfg = yaml.safe_load(fh)
    cfg["cluster_name"] = "dejavu-test-" + secrets.token_hex(4)
    cfg["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    cfg["auth"].update(ssh_user=node.user, ssh_private_key=node.key, ssh_proxy_command=node.proxy_command)
    cfg["file_mounts"]["~/.ray/auth_token"] = token_file
    extra = (f"--port={ports['gcs']} --dashboard-port={ports['dashboard']} --num-cpus=2 "
             f"--dashboard-agent-listen-port={ports['agent']} --metrics-export-port={ports['metrics']}")
    cfg["head_start_ray_commands"] = [c.replace("--port=6379 --dashboard-port=8265", extra)
                                      for c in cfg["head_start_ray_commands"]]
    assert any(extra in c for c in cfg["head_start_ray_commands"])
    path = os.path.join(tmp, "cluster.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(cfg, fh)
    return path


def _ray(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster(s3_env, tmp_path_factory):  # noqa: F811
    tmp = str(tmp_path_factory.mktemp("up"))
    node_env = {**s3_env, "AWS_SECRET_ACCESS_KEY": SECRET}
    node = start_node(tmp, node_env)
    try:
        # The machine image: the product's environment at ~/venv.
        os.symlink(os.path.dirname(BIN), os.path.join(node.home, "venv"))
        token = secrets.token_hex(32)
        token_file = os.path.join(tmp, "auth_token")
        with open(token_file, "w") as fh:
            fh.write(token)
        ports = {name: free_port() for name in ("gcs", "dashboard", "agent", "metrics")}
        config = _cluster_config(tmp, node, token_file, ports)
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0")
        up = _ray(env, "up", "-y", "--no-config-cache", config, timeout=600)
        assert up.returncode == 0, (up.stdout + up.stderr)[-4000:]
        yield {"env": env, "config": config, "node": node, "address": f"http://127.0.0.1:{ports['dashboard']}",
               "up": up, "outputs": [up.stdout, up.stderr]}
    finally:
        node.stop()


def submit(cluster, entry: str, *args: str, extra: tuple = ()) -> subprocess.CompletedProcess:
    # Plain `python`: the config's setup activates ~/venv before `ray start`, so jobs inherit it.
    proc = _ray(cluster["env"], "job", "submit", "--address", cluster["address"], "--working-dir", ".", *extra,
                "--", "python", entry, *args)
    cluster["outputs"] += [proc.stdout, proc.stderr]
    return proc


def test_ray_up_ran_the_configs_setup_and_start_commands_over_ssh(cluster):
    node = cluster["node"]
    bashrc = open(os.path.join(node.home, ".bashrc")).read()
    assert "source ~/venv/bin/activate" in bashrc and "export RAY_AUTH_MODE=token" in bashrc
    assert os.path.exists(os.path.join(node.home, "dejavu-study", "ray_jobs", "run_study.py"))  # file mount
    assert not os.path.exists(os.path.join(node.home, "dejavu-study", ".venv"))  # only the product's files
    assert open(os.path.join(node.home, ".ray", "auth_token")).read().strip() == cluster["env"]["RAY_AUTH_TOKEN"]
    # Ray on the node, started by the config's command with its token (the login shell's setup).
    status = node.ssh("bash -ic 'ray status' 2>&1")
    assert status.returncode == 0 and "2.0 CPU" in status.stdout, status.stdout[-2000:]


def test_job_without_token_is_refused(cluster):
    env = {k: v for k, v in cluster["env"].items() if k != "RAY_AUTH_TOKEN"}
    env["RAY_AUTH_TOKEN_PATH"] = os.devnull
    proc = subprocess.run([RAY, "job", "submit", "--address", cluster["address"], "--", "true"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "auth" in (proc.stdout + proc.stderr).lower()


def test_job_status_logs_and_stop(cluster):
    env, address = cluster["env"], cluster["address"]
    proc = _ray(env, "job", "submit", "--address", address, "--no-wait", "--", "sleep", "300")
    assert proc.returncode == 0, proc.stderr[-2000:]
    job_id = next(w.strip("'") for line in (proc.stdout + proc.stderr).splitlines() if "submitted successfully" in line
                  for w in line.split() if w.strip("'").startswith("raysubmit_"))
    assert _ray(env, "job", "stop", "--address", address, job_id).returncode == 0
    status = _ray(env, "job", "status", "--address", address, job_id)
    assert "stopped" in (status.stdout + status.stderr).lower()


def test_a_job_per_stage_then_a_failing_job_then_its_resubmission_resumes(cluster, tmp_path, cluster_reports):
    import fsspec

    env, address = cluster["env"], cluster["address"]
    first = submit(cluster, "ray_jobs/stage_train.py", *STUDY)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    assert "finished the stages up to train" in first.stdout

    fault = json.dumps({"env_vars": {"DEJAVU_FAULTS": "fail_before_stage=measure"}})
    failed = submit(cluster, "ray_jobs/run_study.py", *STUDY, extra=("--runtime-env-json", fault))
    assert failed.returncode != 0
    log = failed.stdout + failed.stderr
    assert "error: fault injected before stage measure" in log and "Traceback" not in log
    assert "train    reusing finished stage" in log and "embed    done" in log
    job_id = next(w.strip("'") for line in log.splitlines() if "submitted successfully" in line
                  for w in line.split() if w.strip("'").startswith("raysubmit_"))
    status = _ray(env, "job", "status", "--address", address, job_id)
    assert "failed" in (status.stdout + status.stderr).lower()
    logs = _ray(env, "job", "logs", "--address", address, job_id)
    assert "fault injected before stage measure" in logs.stdout

    again = submit(cluster, "ray_jobs/run_study.py", *STUDY)
    log = again.stdout + again.stderr
    assert again.returncode == 0, log[-3000:]
    for stage in ("data", "splits", "train", "embed", "search"):
        assert f"{stage:<8} reusing finished stage" in log, stage
    assert "measure  done" in log and "projector/positive" in log

    fs = fsspec.filesystem("s3")
    names = fs.find(f"{BUCKET}/up/up")
    report_key = next(n for n in names if n.endswith("/report/report.json"))
    report = json.loads(fs.cat_file(report_key))
    assert report["name"] == "up" and set(report["headline"]) >= {"projector/positive", "projector/null"}
    cluster_reports["ray_up"] = numbers(report)  # the node-loss test's undisturbed reference

    dest = str(tmp_path / "pulled")
    run_dir = "s3://" + report_key.rsplit("/report/", 1)[0]
    pull = subprocess.run([os.path.join(BIN, "dejavu"), "report", "pull", run_dir, dest], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert pull.returncode == 0, pull.stderr
    cluster["outputs"] += [pull.stdout, pull.stderr]
    remote = {n.split("/report/", 1)[1]: n for n in names if "/report/" in n and "/report/_" not in n}  # not markers
    local = {os.path.relpath(os.path.join(d, f), dest): os.path.join(d, f) for d, _, fs_ in os.walk(dest) for f in fs_}
    assert set(local) == set(remote)
    assert all(open(local[k], "rb").read() == fs.cat_file(remote[k]) for k in remote)
    # The credentials appear in no output: every file of the run, every command's output.
    blobs = cluster["outputs"] + [fs.cat_file(n) for n in names]
    assert all(SECRET.encode() not in (b if isinstance(b, bytes) else b.encode()) for b in blobs)


def test_ray_down_stops_the_cluster(cluster):
    down = _ray(cluster["env"], "down", "-y", cluster["config"], timeout=300)
    assert down.returncode == 0, (down.stdout + down.stderr)[-3000:]
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            urllib.request.urlopen(cluster["address"] + "/api/version", timeout=2)
        except OSError:
            break
        time.sleep(1)
    else:
        pytest.fail("the dashboard still answers after ray down")
    left = cluster["node"].ssh("pgrep -x raylet; pgrep -x gcs_server; true")  # by process name
    assert left.stdout.strip() == ""
