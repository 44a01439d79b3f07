"""Shared fixtures: a local Ray instance of pinned size shared by the tests that use it, the tiers."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_ray():
    """The tests' local Ray instance (2 CPUs), started if it is not up."""
    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if not ray.is_initialized():
        for *_, proc in _PAIR.get("procs", ()):  # their consoles are checked: no third instance beside them
            proc.wait(timeout=600)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=True)
    return ray


def stop_ray() -> None:
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance shared by every test that asks for it: started once and kept while
    the files that ask for it follow one another (the collection puts them together, below),
    stopped before a test of a file that never asks for it (it may start an instance of its own,
    run studies in processes whose consoles it reads, or check that none is up) and at the end."""
    yield start_ray()


_RAY_FILES: set = set()  # the test files with a test that asks for ray_local (set at collection)


@pytest.fixture(autouse=True)
def _ray_only_where_asked(request):
    if "ray_local" in request.fixturenames:
        start_ray()  # a test of a file without it may have stopped it
    elif request.node.path not in _RAY_FILES:
        stop_ray()
    yield


@pytest.fixture(scope="session", autouse=True)
def _ray_stopped_at_the_end():
    yield
    stop_ray()


@dataclass(frozen=True)
class TinyRun:
    """One ``dejavu run configs/tiny.yaml`` of the pair: its output root, exit code and console."""

    output: str
    returncode: int
    stdout: str
    stderr: str

    @property
    def run_dir(self) -> str:
        (run,) = [e.path for e in os.scandir(os.path.join(self.output, "tiny")) if e.name.startswith("run-")]
        return run


_PAIR: dict = {}  # the tiny pair's processes, started when the collection holds a test that reads them


def _start_tiny_pair() -> None:
    """Start the pair (below) in the background: it runs beside the unit tier, which takes one
    core and no Ray, instead of after it. Consoles go to files (a pipe nobody reads would fill and
    stall the run)."""
    root = tempfile.mkdtemp(prefix="tiny-pair-")
    procs = []
    for i in (1, 2):
        out = os.path.join(root, f"out{i}")
        stdout, stderr = open(out + ".stdout", "w+"), open(out + ".stderr", "w+")
        procs.append((out, stdout, stderr, subprocess.Popen(
            [sys.executable, "-m", "study.cli", "run", "configs/tiny.yaml", "--output", out], cwd=ROOT,
            stdout=stdout, stderr=stderr, env={**os.environ, "PYTHONPATH": ROOT, "PYTHONHASHSEED": str(i)})))
    _PAIR.update(root=root, procs=procs)


@pytest.fixture(scope="session")
def tiny_pair() -> list[TinyRun]:
    """Two runs of ``configs/tiny.yaml`` at once by the ``dejavu`` command, each a fresh process
    with a Ray instance of its own and its own string hashing (``PYTHONHASHSEED``). Several tests
    read them instead of running studies of their own: the consoles (test_console_clean), the
    outputs' equality (test_reproduce), an untouched reference for other runs of the same config
    (test_store_outage, test_api)."""
    if not _PAIR:
        stop_ray()  # the runs' consoles are checked: no third instance on the machine while they run
        _start_tiny_pair()
    runs = []
    for out, stdout, stderr, proc in _PAIR["procs"]:
        proc.wait(timeout=600)
        stdout.seek(0)
        stderr.seek(0)
        runs.append(TinyRun(out, proc.returncode, stdout.read(), stderr.read()))
    return runs


def pytest_sessionfinish(session, exitstatus):
    for _, stdout, stderr, proc in _PAIR.get("procs", ()):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stdout.close()
        stderr.close()
    if _PAIR:
        shutil.rmtree(_PAIR["root"], ignore_errors=True)


@pytest.fixture(scope="session")
def cluster_reports():
    """Headline numbers of the cluster tests' study (tests/cluster_study.py) by the test that ran
    it: a later test compares its own run with an earlier one instead of running a second study."""
    return {}


# The suite's tiers (``pytest -m unit`` etc.): unit (no Ray: maths, configs, readers, one process),
# ray (a local Ray instance: one stage or one part), e2e (whole studies through the command line
# or the Python API), cluster (``ray up`` on 127.0.0.1, the fake multi-node autoscaler). Each test
# file's tier, here in one table so that a new file must be given one (collection fails without);
# a test marked with another tier in its file keeps its own.
TIERS = {
    "unit": """augment augment_tv calibration checkpoints clip_import config crops frame input_checks layout lookup
               losses measure_batches measure_checks metrics model_input models naive_bayes objects
               probe purity repeats retries clip search_blas search_plan splits sslmem storage_atomic
               synthetic tars text_random topk views vlm_one_model object_storage quality pvalues
               annotate_parts annotators hf_detectors protocols sample_level assignments text_encoders ssl_formats byol_release""",
    "ray": """balance coco embed_pipeline hf near_dups search_ivfpq search_restart search_shards
              search_stage splits_stage train_faults train_stream voc faults inspect laion_inputs
              report_pull vlm_measure_tasks ssl_measure_tasks annotate_stage id_tables""",
    "e2e": """api console console_clean reproduce pipeline_e2e photos_e2e vlm_e2e sslmem_e2e ssl_sweeps new_kind
              wheel store_outage preflight cli_errors annotate_e2e protocol_run text_model own_models_e2e paper_configs""",
    "cluster": """ray_up ray_up_nodes cluster_yaml""",
}
FILE_TIER = {f"test_{name}.py": tier for tier, names in TIERS.items() for name in names.split()}


def pytest_configure(config):
    for tier, what in (("unit", "no Ray"), ("ray", "a local Ray instance"), ("e2e", "whole studies"),
                       ("cluster", "`ray up` and the fake multi-node autoscaler")):
        config.addinivalue_line("markers", f"{tier}: {what}")


def pytest_collection_modifyitems(config, items):
    unlisted = sorted({item.path.name for item in items if item.path.name not in FILE_TIER})
    if unlisted:
        raise pytest.UsageError(f"give these test files a tier in tests/conftest.py TIERS: {', '.join(unlisted)}")
    for item in items:
        if not any(item.get_closest_marker(t) for t in TIERS):
            item.add_marker(getattr(pytest.mark, FILE_TIER[item.path.name]))
    # Order: tier by tier (unit, ray, e2e, cluster); within a tier the files whose tests use the
    # shared Ray instance first, so that it starts about twice for the suite instead of once per
    # module (seconds each on 2 CPUs). Files stay whole and in order, so each module's fixtures are
    # made once.
    rank = {tier: i for i, tier in enumerate(TIERS)}
    first = {id(item): i for i, item in enumerate(items)}
    on_ray = {item.path for item in items if "ray_local" in getattr(item, "fixturenames", ())}
    _RAY_FILES.clear()
    _RAY_FILES.update(on_ray)
    file_first = {}
    for item in items:
        file_first.setdefault(item.path, first[id(item)])

    def key(item):
        tier = next(t for t in TIERS if item.get_closest_marker(t))
        return rank[tier], item.path not in on_ray, file_first[item.path], first[id(item)]

    items.sort(key=key)


def pytest_collection_finish(session):
    """Start the tiny pair once the ``-m`` / ``-k`` selection is made (this conftest's
    ``pytest_collection_modifyitems`` runs before pytest's own deselects): only when a selected test
    reads it, so that ``make test-fast`` runs no study beside the unit tier."""
    if not session.config.option.collectonly and any("tiny_pair" in getattr(item, "fixturenames", ())
                                                     for item in session.items):
        _start_tiny_pair()


@pytest.fixture(autouse=True)
def _unit_tier_starts_no_ray(request, monkeypatch):
    """A unit test that starts Ray fails (its tier would be wrong, and make test-fast slow)."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    import ray

    def refuse(*args, **kwargs):
        raise RuntimeError("a unit-tier test started Ray: give it the ray tier (tests/conftest.py TIERS)")

    monkeypatch.setattr(ray, "init", refuse)
    yield
