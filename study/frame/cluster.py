"""Joining Ray, and what the cluster must offer before a stage asks for it.

``join`` starts the study's own local instance or joins the cluster of ``ray.address`` (or of the
Ray job it runs in); a cluster that does not answer, refuses the token or runs another Ray version
ends in one ``error:`` line naming the address. ``check_paths`` refuses local paths where other
machines would need them: on a cluster of several nodes, or in a Ray job (whose working directory
is a temporary copy on the head), a local output root is invisible to the workers and to the next
job, unless ``ray.shared_paths`` says the path is on a file system every node mounts.
``check_resources`` ends a study that asks for what no node can give (GPUs on a machine without
one, a worker larger than any node) with one line, at once on the study's own instance and after
a bounded wait, during which the autoscaler is asked for it, on a cluster that may still grow.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from typing import Any, Callable, Mapping

from study import storage
from study.errors import StudyError

# Set by Ray's job supervisor in the environment of a job's entrypoint (the job's config as JSON).
JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def in_ray_job() -> bool:
    return JOB_ENV in os.environ


def ensure_ray(cfg, paths: dict[str, str | None] | None = None) -> None:
    """Join the cluster of a Ray job (or ``ray.address``), else start a local instance; then refuse
    local ``paths`` (default: the study's output root and inputs) that other machines would need."""
    import ray

    from study.preflight import study_inputs

    if not ray.is_initialized():
        join(cfg.ray)
    check_paths(paths if paths is not None else {"output": cfg.output, **study_inputs(cfg)}, cfg.ray.shared_paths)


def join(ray_cfg) -> None:
    """Join the cluster of a Ray job (or ``ray.address``), else start a local instance."""
    import ray

    if ray.is_initialized():
        return
    if _console["own"]:
        _quiet_ray_data()
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    address = ray_cfg.address or os.environ.get("RAY_ADDRESS")
    if not address:
        # An instance of the study's own: Ray would otherwise join whatever cluster was last started
        # on this machine (``ray.address=auto`` asks for that).
        ray.init(address="local", num_cpus=ray_cfg.num_cpus, include_dashboard=ray_cfg.dashboard, log_to_driver=True,
                 logging_level=logging.WARNING)
        return
    said = _Held()
    try:
        _answers(address)
        with _stderr_held(said):
            ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
    except Exception as exc:  # ConnectionError, RuntimeError (version), auth errors
        raise StudyError(f"cannot join the Ray cluster at ray.address={address}: {_why(exc, said.text)}") from None
    sys.stderr.write(said.text)  # joined: what Ray printed while joining is shown after all


_console = {"own": False}


def own_console() -> None:
    """Called by the command line: its process and console are the product's, so Ray Data's
    progress bars and informational lines are turned off there (the stages show their own
    progress) and a task error the command reports in one ``error:`` line is not shown twice. A
    program that imports ``study`` keeps Ray Data as it set it up."""
    _console["own"] = True


def _quiet_ray_data() -> None:
    import ray

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    for handler in logging.getLogger("ray.data").handlers:
        if (isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
                and not any(isinstance(f, _SaidInOneLine) for f in handler.filters)):
            handler.addFilter(_SaidInOneLine())


def _why(exc: Exception, printed: str) -> str:
    """The cause of a failed join, from the exception and what Ray's core printed meanwhile."""
    text = str(exc).strip()
    if "InvalidAuthToken" in printed + text or "Unauthenticated" in printed + text:
        return ("the cluster refused this machine's token; give the cluster's token in RAY_AUTH_TOKEN (or "
                "~/.ray/auth_token), or use the address of the cluster it belongs to")
    if "version mismatch" in text.lower():
        return f"Ray version mismatch ({' '.join(text.split())}); install the cluster's Ray version here"
    first = (text.splitlines() or [type(exc).__name__])[0]
    return f"{type(exc).__name__}: {first}; is it running (ray status), and is the address right?"


class _Held:
    text = ""


@contextlib.contextmanager
def _stderr_held(held: "_Held"):
    """Hold what is written to this process's stderr (file descriptor 2, where Ray's C++ core
    writes: a refused token is one warning per second while ``ray.init`` retries) until the
    block ends: a failed join reads it to name the cause, a successful one prints it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            held.text = tmp.read().decode(errors="replace")


class _SaidInOneLine(logging.Filter):
    """Keeps off Ray Data's console the traceback of a task's error that the command ends with in
    one ``error:`` line of its own (a user mistake, an object store that stopped answering); Ray
    Data's log file still has it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from study.errors import causes
        from study.preflight import store_error

        # An error logged while the exception is being handled names it in ``exc_info``, or not
        # at all (Ray Data's "exception occurred in ... internal code" line): then it is the one
        # this thread is handling.
        exc = record.exc_info[1] if record.exc_info else sys.exc_info()[1] if record.levelno >= logging.ERROR else None
        if exc is None:
            return True
        said = any(isinstance(e, StudyError) for e in causes(exc, context=True))
        return not (said or store_error(None, exc, "") is not None)


def _answers(address: str, timeout_s: float = 5.0) -> None:
    """Raise ConnectionError when nothing listens at a ``host:port`` (or ``ray://host:port``)
    address: Ray itself would retry a silent address for minutes before saying so."""
    import socket

    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {host}:{port} ({exc.strerror or type(exc).__name__})") from None


def own_instance(ray_cfg) -> bool:
    """Whether the study started the Ray instance itself (nothing else can add nodes to it)."""
    return not (ray_cfg.address or os.environ.get("RAY_ADDRESS"))


@contextlib.contextmanager
def reads_for(ray_cfg):
    """Ray Data's Parquet reads as suit the instance, for the stages run inside the block.

    Ray Data's default Parquet reader lists a read's files by reading their footers on a pool of
    up to 32 actors, each a process of its own, for every read. On the study's own instance (one
    machine) starting those processes costs more than the listing they do (a tiny study: 9 of 55
    CPU-seconds, 5 s of 35), so there the files are listed by the reading process (Ray Data's
    ``use_datasource_v2 = False``); a cluster keeps Ray's default. The setting is put back
    afterwards, for a program that runs studies among its own Ray Data work."""
    import ray

    context = ray.data.DataContext.get_current()
    before = context.use_datasource_v2
    if own_instance(ray_cfg):
        context.use_datasource_v2 = False
    try:
        yield
    finally:
        context.use_datasource_v2 = before


def alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def check_paths(paths: Mapping[str, str | None], shared: bool) -> None:
    """Refuse local paths that only the driver's machine can read when the study spans machines
    (several nodes) or runs as a Ray job, unless ``shared`` (``ray.shared_paths``)."""
    local = {k: v for k, v in paths.items() if v and storage.is_local(v)}
    if not local or shared:
        return
    nodes = len(alive_nodes())
    where = (f"this Ray cluster has {nodes} nodes" if nodes > 1 else
             "this study runs as a Ray job (its working directory is a temporary copy on the head)" if in_ray_job()
             else None)
    if where is None:
        return
    key, path = next(iter(local.items()))
    raise StudyError(f"{key}: {path} is a local path, but {where}: other machines and later jobs cannot see it. "
                     "Use object storage (s3://, gs://), or, if the path is on a file system every node mounts "
                     "(NFS, ...), say so with --set ray.shared_paths=true")


def worker_bundle(cfg) -> dict[str, float]:
    """The Ray resources of one training worker of a study config."""
    return {"CPU": cfg.train.cpus_per_worker, "GPU": 1.0 if cfg.ray.use_gpu else 0.0}


def _fits(bundle: Mapping[str, float], node: Mapping[str, float]) -> bool:
    return all(node.get(k, 0.0) >= v for k, v in bundle.items() if v > 0)


def _offers() -> list[dict[str, float]]:
    return [{k: v for k, v in n.get("Resources", {}).items() if k in ("CPU", "GPU", "memory")}
            for n in alive_nodes()]


def _describe(offers: list[dict[str, float]]) -> str:
    def one(o):
        return ", ".join(f"{k} {v / 2**30:.1f} GiB" if k == "memory" else f"{k} {v:g}" for k, v in sorted(o.items()))

    return "; ".join(f"node {i + 1}: {one(o)}" for i, o in enumerate(offers)) or "no node"


def check_resources(bundle: Mapping[str, float], what: str, own: bool, wait_s: float,
                    log: Callable[[str], Any]) -> None:
    """Some node can hold ``bundle`` (Ray resources of one worker or replica), else one error
    naming ``what`` asked for it and what the nodes offer. On the study's own instance (``own``)
    the answer is immediate; on a joined cluster the autoscaler is asked for the bundle and the
    nodes are watched for ``wait_s`` seconds."""
    if any(_fits(bundle, o) for o in _offers()):
        return
    if not own and wait_s > 0:
        from ray.autoscaler.sdk import request_resources

        log(f"no node can hold {dict(bundle)} for {what} yet; asking the autoscaler and waiting up to {wait_s:.0f} s")
        request_resources(bundles=[dict(bundle)])
        deadline = time.monotonic() + wait_s
        try:
            while time.monotonic() < deadline:
                if any(_fits(bundle, o) for o in _offers()):
                    return
                time.sleep(5)
        finally:
            request_resources(bundles=[])  # the training itself asks from here on
    asked = ", ".join(f"{k} {v:g}" for k, v in bundle.items() if v > 0)
    waited = "" if own or wait_s <= 0 else f" after waiting {wait_s:.0f} s for the autoscaler"
    raise StudyError(f"{what} asks for {asked} per worker, and no node of this Ray cluster can give it{waited} "
                     f"({_describe(_offers())}); change the request (ray.use_gpu, train.cpus_per_worker, "
                     "embed.cpus_per_actor) or the cluster")
