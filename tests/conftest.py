"""Shared fixtures: a local Ray instance of pinned size, shared by the tests of a module."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def ray_local():
    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def cluster_reports():
    """Headline numbers of the cluster tests' study (tests/cluster_study.py) by the test that ran
    it: a later test compares its own run with an earlier one instead of running a second study."""
    return {}
