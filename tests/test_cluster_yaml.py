"""The cluster launcher configs pass the checks `ray up` makes before it contacts the cloud, say what
their comments promise, and broken copies fail.

Two layers of Ray's own checks, from the installed Ray: the JSON schema bundled as
``ray/autoscaler/ray-schema.json``, then ``prepare_config`` + ``validate_config``, which `ray up` runs
on the same file (defaults merged, head type must exist, sum of ``min_workers`` within
``max_workers``). Neither needs credentials or network, so a typo in a launcher config fails here
instead of on the first `ray up`. The rest checks what no schema can: CPU head, GPU workers that
scale from zero on spot and on-demand, token auth, storage access for workers, SSH-only ingress.
"""
from __future__ import annotations

import copy
import json
import os
import re

import jsonschema
import pytest
import yaml

import ray.autoscaler
from ray.autoscaler._private.aws.config import DEFAULT_RAY_INSTANCE_PROFILE, _create_default_inbound_rules
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_PATH = os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")
CONFIGS = {"aws": "cluster.yaml", "gcp": "configs/cluster-gcp.yaml"}
# The account `ray up` creates for the GCP head (ray.autoscaler._private.gcp.config, which needs
# the Google API client to import).
GCP_HEAD_ACCOUNT = "ray-autoscaler-sa-v1"


def load(provider: str) -> dict:
    with open(os.path.join(ROOT, CONFIGS[provider])) as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return json.load(f)


@pytest.fixture(params=sorted(CONFIGS))
def provider(request) -> str:
    return request.param


@pytest.fixture()
def cluster(provider) -> dict:
    return load(provider)


def ray_up_checks(cfg: dict, schema: dict) -> None:
    jsonschema.validate(cfg, schema)
    # prepare_config mutates its argument; keep the caller's copy as loaded.
    validate_config(prepare_config(copy.deepcopy(cfg)))


def gpu_types(cfg: dict) -> dict:
    return {k: t for k, t in cfg["available_node_types"].items() if t["resources"].get("GPU", 0) >= 1}


def is_spot(provider: str, node_config: dict) -> bool:
    if provider == "aws":
        return node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    scheduling = node_config.get("scheduling", {})
    # Ray's own GCP examples write scheduling as a list, which Compute Engine rejects.
    assert isinstance(scheduling, dict), "GCP scheduling must be a mapping"
    return scheduling.get("provisioningModel") == "SPOT" or scheduling.get("preemptible") is True


def test_config_passes_ray_up_checks(cluster, schema):
    ray_up_checks(cluster, schema)


def test_cpu_head_and_gpu_workers_from_zero(cluster):
    types = cluster["available_node_types"]
    assert "GPU" not in types[cluster["head_node_type"]]["resources"]
    gpus = gpu_types(cluster)
    assert gpus and all(t.get("min_workers", 0) == 0 for t in gpus.values())
    assert set(gpus) == set(types) - {cluster["head_node_type"]}
    assert cluster["file_mounts"]["~/dejavu-study/study"] == "./study"  # the product, not the working tree's .venv
    assert "." not in cluster["file_mounts"].values()
    assert cluster["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_gpu_workers_come_as_spot_preferred_and_on_demand(provider, cluster):
    gpus = gpu_types(cluster)
    spot = [k for k, t in gpus.items() if is_spot(provider, t["node_config"])]
    on_demand = [k for k in gpus if k not in spot]
    assert spot and on_demand
    # Same resources, so `priority` alone decides; spot ranks first.
    assert len({json.dumps(t["resources"], sort_keys=True) for t in gpus.values()}) == 1
    priority = {k: t.get("priority", 0) for k, t in gpus.items()}
    assert min(priority[k] for k in spot) > max(priority[k] for k in on_demand)
    if provider == "gcp":
        for t in gpus.values():
            assert t["node_config"]["guestAccelerators"][0]["acceleratorCount"] >= 1
            assert t["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE"


def test_every_node_starts_ray_with_token_auth(provider, cluster):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cluster[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), key
    text = open(os.path.join(ROOT, CONFIGS[provider])).read()
    assert "RAY_AUTH_MODE=disabled" not in text


def test_workers_get_object_storage_access(provider, cluster):
    workers = gpu_types(cluster).values()
    if provider == "aws":
        # The head's default profile, so the head's role needs iam:PassRole on itself only.
        profile = {"Name": DEFAULT_RAY_INSTANCE_PROFILE}
        assert all(t["node_config"]["IamInstanceProfile"] == profile for t in workers)
        return
    project = cluster["provider"]["project_id"] or "PROJECT_ID"
    for t in workers:
        (account,) = t["node_config"]["serviceAccounts"]
        assert account["email"] == f"{GCP_HEAD_ACCOUNT}@{project}.iam.gserviceaccount.com"
        assert any(s.endswith(("devstorage.read_write", "devstorage.full_control", "cloud-platform"))
                   for s in account["scopes"])


def test_aws_security_group_lets_in_only_ssh():
    cluster = load("aws")
    group = cluster["provider"]["security_group"]
    assert group["GroupName"]
    # The rules Ray writes into a new group: its defaults plus IpPermissions.
    cluster_groups = {"sg-cluster"}
    for rule in _create_default_inbound_rules(cluster_groups, group.get("IpPermissions", [])):
        if any(rule.get(k) for k in ("IpRanges", "Ipv6Ranges", "PrefixListIds")):
            assert (rule["IpProtocol"].lower(), rule["FromPort"], rule["ToPort"]) == ("tcp", 22, 22), rule
        else:
            assert {p["GroupId"] for p in rule["UserIdGroupPairs"]} <= cluster_groups, rule


def test_setup_installs_the_package(provider, cluster):
    install = re.compile(r"cd ~/dejavu-study && ~/venv/bin/pip install -q -e \.( |$)")
    assert any(install.search(c) for c in cluster["setup_commands"])
    assert any("-e '.[gpu]'" in c and "faiss-gpu" in c for c in cluster["worker_setup_commands"])
    client = {"aws": "boto3", "gcp": "google-api-python-client"}[provider]
    assert any(client in c for c in cluster["head_setup_commands"])
    if provider == "gcp":
        assert any("gcsfs" in c and install.search(c) for c in cluster["setup_commands"])


def test_both_clouds_set_up_nodes_alike():
    aws, gcp = load("aws"), load("gcp")
    for key in ("cluster_name", "max_workers", "idle_timeout_minutes", "file_mounts", "rsync_filter",
                "worker_setup_commands", "head_start_ray_commands",
                "worker_start_ray_commands"):
        assert aws[key] == gcp[key], key
    # GCP's setup differs only in adding gcsfs to the install.
    assert [c.replace(" 'gcsfs>=2024.1'", "") for c in gcp["setup_commands"]] == aws["setup_commands"]


def _unknown_top_level_key(cfg):
    cfg["max_worker"] = 4  # a plausible typo of max_workers


def _max_workers_wrong_type(cfg):
    cfg["max_workers"] = "4"


def _node_type_without_resources(cfg):
    del cfg["available_node_types"][cfg["head_node_type"]]["resources"]


def _fractional_gpu_resource(cfg):
    next(iter(gpu_types(cfg).values()))["resources"]["GPU"] = 0.5


def _head_type_not_defined(cfg):
    cfg["head_node_type"] = "no_such_type"


def _min_workers_above_cluster_cap(cfg):
    next(iter(gpu_types(cfg).values()))["min_workers"] = cfg["max_workers"] + 1


BREAKAGES = {
    "unknown top-level key": (_unknown_top_level_key, jsonschema.ValidationError),
    "max_workers as a string": (_max_workers_wrong_type, jsonschema.ValidationError),
    "node type without resources": (_node_type_without_resources, jsonschema.ValidationError),
    "fractional GPU resource": (_fractional_gpu_resource, jsonschema.ValidationError),
    # These two pass the schema; only Ray's own validate_config catches them.
    "head type not defined": (_head_type_not_defined, ValueError),
    "min_workers above max_workers": (_min_workers_above_cluster_cap, ValueError),
}


@pytest.mark.parametrize("name", sorted(BREAKAGES))
def test_broken_copy_fails(cluster, schema, name):
    breaks, error = BREAKAGES[name]
    broken = copy.deepcopy(cluster)
    breaks(broken)
    with pytest.raises(error):
        ray_up_checks(broken, schema)
