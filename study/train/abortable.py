"""A Ray Train ``TorchTrainer`` that another thread can stop (``fit_all`` aborts the other trainers
when one fails, and all of them on Ctrl-C)."""
from __future__ import annotations

import threading

import ray
from ray.train.torch import TorchTrainer


class AbortableTrainer(TorchTrainer):
    """A ``TorchTrainer`` whose run another thread can stop with ``abort()``.

    Ray keeps its controller actor's handle inside ``fit()`` and, in the main thread only, installs
    a SIGINT handler that aborts it. This override is Ray 2.60's ``_initialize_and_run_controller``
    (the version is pinned), keeping the handle instead; a KeyboardInterrupt while waiting aborts
    the run and then reaches the caller, in the main thread as anywhere (the CLI's resume hint).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._controller = None
        self.aborted = False

    def _initialize_and_run_controller(self, **controller_init_kwargs):
        from ray._common.constants import RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR as WARN_VAR
        from ray.train.v2._internal.constants import (
            DEFAULT_RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_VALUE as WARN_VALUE, get_env_vars_to_propagate)
        from ray.train.v2._internal.execution.controller import TrainController

        env_vars = get_env_vars_to_propagate()
        env_vars.setdefault(WARN_VAR, WARN_VALUE)
        controller_cls = ray.remote(
            num_cpus=0,
            label_selector={ray._raylet.RAY_NODE_ID_KEY: ray.get_runtime_context().get_node_id()},
            runtime_env={"env_vars": env_vars},
        )(TrainController)
        with self._lock:
            if self.aborted:
                raise RuntimeError(f"training run {self.run_config.name} aborted before it started")
            controller = self._controller = controller_cls.remote(**controller_init_kwargs)
        try:
            ray.get(controller.run.remote())
            return ray.get(controller.get_result.remote())
        except KeyboardInterrupt:
            self.abort()
            raise
        finally:
            with self._lock:  # the handle alone keeps a finished controller alive
                self._controller = None

    def abort(self) -> None:
        """Stop the run as Ray's Ctrl-C does: the controller aborts its workers and exits. No-op
        once finished; before the start, the run will not start."""
        with self._lock:
            self.aborted = True
            controller = self._controller
        if controller is not None:
            try:
                ray.get(controller.abort.remote())
            except ray.exceptions.RayActorError:  # it exits within the call
                pass
