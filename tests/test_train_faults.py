"""Training under faults, on the real Ray, with each runner (``train.runner``: Ray Train, and a
one-worker fit's loop in its own task): a worker killed midway through an epoch (Ray Train
restarts the group, Ray the task, from the last checkpoint and the run finishes, its resumed
epochs marked), and concurrent fits where one fails or the user presses Ctrl-C (every fit is
stopped and its CPUs freed, the error names the failed model, a KeyboardInterrupt reaches the
caller)."""
from __future__ import annotations

import _thread
import dataclasses
import faulthandler
import json
import os
import signal
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import torch
from ray.train import FailureConfig

from study import storage
from study.config import DataConfig, ModelConfig, TrainConfig
from study.data import records, synthetic
from study.data.loading import split_uri
from study.data.model_input import ModelInput
from study.train import driver
from study.train.driver import TrainJob, fit, fit_all
from study.train.recipes import RECIPES

MODEL = ModelConfig(backbone="small_cnn", projector_dims=(32, 16))
# One 1-CPU worker per trainer: two trainers fill the module's 2-CPU instance. 48 records and a
# batch of 16 give 3 steps per epoch, so a worker killed after the first step dies mid-epoch.
TRAIN = TrainConfig(method="supervised", epochs=4, global_batch_size=16, num_workers=1, cpus_per_worker=1,
                    checkpoint_every=1, concurrent=True)
RAY_TRAIN_ACTORS = ("TrainController", "RayTrainWorker", "PlacementGroupCleaner")


@pytest.fixture(params=["ray_train", "auto"])
def train(request) -> TrainConfig:
    """TRAIN on Ray Train, and (auto) in the fit's own task, as a one-worker fit from memory runs."""
    cfg = dataclasses.replace(TRAIN, runner=request.param)
    assert driver.in_task(cfg, TrainJob("m", ("target",), ""), {"one_machine": True}) == (request.param == "auto")
    return cfg


@pytest.fixture(scope="module")
def context(ray_local, tmp_path_factory):
    """Synthetic records and a "target" split of 48 of them, written directly (no splits stage)."""
    tmp = tmp_path_factory.mktemp("faults")
    data = DataConfig(num_images=48, image_size=16, num_classes=4, shard_size=48)
    data_root, splits_dir = str(tmp / "data"), str(tmp / "splits")
    for shard, rows in synthetic.iter_shards(data):
        records.write_shard(storage.join(data_root, f"part-{shard:05d}.parquet"), rows)
        os.makedirs(split_uri(splits_dir, "target"), exist_ok=True)
        pq.write_table(pa.table({"id": rows["id"], "label": rows["label"]}),
                       os.path.join(split_uri(splits_dir, "target"), f"part-{shard:05d}.parquet"))
    return {"recipe": "ssl", "data_root": data_root, "splits_dir": splits_dir, "num_classes": 4,
            "inputs": ModelInput(16), "one_machine": True}


@pytest.fixture()
def hang_guard():
    """The long fits below end only when stopped: should stopping ever fail, the suite ends with
    every thread's traceback after 10 minutes instead of waiting for 100,000 epochs."""
    faulthandler.dump_traceback_later(600, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def history(out_dir: str) -> list[dict]:
    return [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl"))]


def live_train_actors() -> list[str]:
    # The state API (ray.util.state) needs the dashboard, which the shared instance leaves out.
    actors = ray._private.state.actors().values()
    return [a["ActorClassName"] for a in actors if a["State"] == "ALIVE" and a["ActorClassName"] in RAY_TRAIN_ACTORS]


def assert_all_stopped(within_s: float = 15.0) -> None:
    """No Ray Train actor left alive, no placement group held and every CPU free again (a fit's
    task ended): the next test needs the CPUs."""
    deadline = time.monotonic() + within_s
    while live_train_actors() or _live_placement_groups() or ray.available_resources().get("CPU", 0) < 2:
        assert time.monotonic() < deadline, (live_train_actors(), _live_placement_groups(), ray.available_resources())
        time.sleep(0.2)


def _live_placement_groups() -> list[str]:
    return [pg for pg, t in ray.util.placement_group_table().items() if t["state"] != "REMOVED"]


def uninterrupted(context: dict, cfg: TrainConfig) -> tuple[list[float], dict]:
    """The oracle: the same recipe trained epoch after epoch in this process, without Ray, seeded
    as ``train_func`` seeds each epoch; its per-epoch losses and final weights."""
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.torch_threads)  # as the worker: the same reduction order
    try:
        torch.manual_seed(cfg.seed)
        one = RECIPES["ssl"].fit({"train": cfg, "model": MODEL, "splits": ["target"], **context}, 0, 1)
        losses = [one.run_epoch(one.model, e, torch.Generator().manual_seed(cfg.seed * 1_000_003 + e * 101))["loss"]
                  for e in range(cfg.epochs)]
    finally:
        torch.set_num_threads(threads)
    return losses, one.model.encoder.state_dict()  # the learner's encoder: what model.pt holds


def test_killed_worker_resumes_from_the_last_checkpoint(context, train, tmp_path, monkeypatch):
    out = str(tmp_path / "m")
    monkeypatch.setenv("DEJAVU_FAULTS", "kill_train_worker=2")
    fit(TrainJob("m", ("target",), out), train, MODEL, context, use_gpu=False)

    # Killed in epoch 2, restarted (by Ray Train, or Ray reruns the task) from epoch 1's
    # checkpoint: every epoch once, in order, and those trained after the restore marked by their attempt.
    got = history(out)
    assert [h["epoch"] for h in got] == [1, 2, 3, 4]
    assert [h["attempt"] for h in got] == [0, 1, 1, 1]
    # Per-epoch seeding and the restored optimiser and schedule: as if never interrupted.
    losses, weights = uninterrupted(context, train)
    assert [h["loss"] for h in got] == losses
    saved = torch.load(os.path.join(out, "model.pt"), weights_only=False)["state_dict"]
    assert saved.keys() == weights.keys() and all(torch.equal(saved[k], weights[k]) for k in saved)
    assert_all_stopped()


def test_a_failed_fit_stops_the_other_and_is_named(context, train, tmp_path, monkeypatch, hang_guard):
    # Ray Train would restart the failing worker twice first (max_failures=2): spare the test that.
    # (A task is retried only when its process or node is lost, not for an error of its own.)
    monkeypatch.setattr(driver, "FailureConfig", lambda max_failures: FailureConfig(max_failures=0))
    long = dataclasses.replace(train, epochs=100_000, checkpoint_every=1000)  # model_a alone: an hour
    good = TrainJob("model_a", ("target",), str(tmp_path / "a"))
    bad = TrainJob("model_b", ("no_such_split",), str(tmp_path / "b"))  # its worker fails loading
    with pytest.raises(RuntimeError, match="training failed for model_b") as info:
        fit_all([good, bad], long, MODEL, context, use_gpu=False)
    said = "model_b: rank 0: ValueError" if train.runner == "ray_train" else "model_b: ValueError"
    assert "model_a" not in str(info.value) and said in str(info.value), str(info.value)
    assert info.value.__cause__ is not None  # the failure itself, with its traceback
    assert not os.path.exists(os.path.join(good.out_dir, "model.pt"))  # stopped, not finished
    assert_all_stopped()


def test_ctrl_c_stops_both_trainers(context, train, tmp_path, hang_guard):
    long = dataclasses.replace(train, epochs=100_000)
    jobs = [TrainJob(name, ("target",), str(tmp_path / name)) for name in ("model_a", "model_b")]

    def press_ctrl_c_once_both_train() -> None:
        deadline = time.monotonic() + 300  # a loaded machine starts Ray Train slowly
        while not all(os.path.exists(os.path.join(j.out_dir, "metrics.jsonl")) for j in jobs):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        _thread.interrupt_main()

    # A handler that swallows Ctrl-C, as a library may leave one installed: fit_all still stops.
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=press_ctrl_c_once_both_train, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            fit_all(jobs, long, MODEL, context, use_gpu=False)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # put back as it was
    finally:
        signal.signal(signal.SIGINT, before)
    for job in jobs:  # both were training when stopped
        assert history(job.out_dir)
    assert_all_stopped()
