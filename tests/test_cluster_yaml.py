"""cluster.yaml passes the checks `ray up` makes before it contacts AWS, and broken copies do not.

Two layers, both from the installed Ray: the JSON schema bundled as ``ray/autoscaler/ray-schema.json``,
then ``prepare_config`` + ``validate_config``, which `ray up` runs on the same file (defaults merged,
head type must exist, sum of ``min_workers`` within ``max_workers``). Neither needs credentials or
network, so a typo in the launcher config fails here instead of on the first `ray up`.
"""
from __future__ import annotations

import copy
import json
import os

import jsonschema
import pytest
import yaml

import ray.autoscaler
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_PATH = os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")


@pytest.fixture(scope="module")
def schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return json.load(f)


@pytest.fixture()
def cluster() -> dict:
    with open(os.path.join(ROOT, "cluster.yaml")) as f:
        return yaml.safe_load(f)


def ray_up_checks(cfg: dict, schema: dict) -> None:
    jsonschema.validate(cfg, schema)
    # prepare_config mutates its argument; keep the caller's copy as loaded.
    validate_config(prepare_config(copy.deepcopy(cfg)))


def test_cluster_yaml_passes_ray_up_checks(cluster, schema):
    ray_up_checks(cluster, schema)


def test_cluster_has_cpu_head_and_autoscaled_gpu_workers(cluster):
    types = cluster["available_node_types"]
    assert "GPU" not in types[cluster["head_node_type"]]["resources"]
    gpu_types = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_types and all(t.get("min_workers", 0) == 0 for t in gpu_types)
    assert cluster["file_mounts"]["~/dejavu-study"] == "."


def test_every_node_starts_ray_with_token_auth(cluster):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cluster[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), key
    text = open(os.path.join(ROOT, "cluster.yaml")).read()
    assert "RAY_AUTH_MODE=disabled" not in text


def _unknown_top_level_key(cfg):
    cfg["max_worker"] = 4  # a plausible typo of max_workers


def _max_workers_wrong_type(cfg):
    cfg["max_workers"] = "4"


def _node_type_without_resources(cfg):
    del cfg["available_node_types"][cfg["head_node_type"]]["resources"]


def _fractional_gpu_resource(cfg):
    worker = next(t for t in cfg["available_node_types"].values() if "GPU" in t["resources"])
    worker["resources"]["GPU"] = 0.5


def _head_type_not_defined(cfg):
    cfg["head_node_type"] = "no_such_type"


def _min_workers_above_cluster_cap(cfg):
    worker = next(t for t in cfg["available_node_types"].values() if "GPU" in t["resources"])
    worker["min_workers"] = cfg["max_workers"] + 1


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
