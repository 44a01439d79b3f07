"""Shared fixtures: one local Ray instance of pinned size for every test that needs Ray."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_local():
    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True)
    yield ray
    ray.shutdown()
