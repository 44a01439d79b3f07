"""Memory of a process tree from Linux's /proc (no psutil): each process's peak RSS (VmHWM) and
the peak of the summed RSS of the driver and its Ray workers, sampled by a background thread."""
from __future__ import annotations

import os
import threading


def _status(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "PPid"):
                    out[key] = int(value.split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            out["cmd"] = fh.read().split(b"\0")[0].decode(errors="replace")
    except (OSError, ValueError):
        return {}
    return out


def process_tree(root: int) -> dict[int, dict]:
    """The driver and every descendant (raylet, GCS, workers) with RSS/HWM in KiB."""
    procs = {int(p): _status(int(p)) for p in os.listdir("/proc") if p.isdigit()}
    tree, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        if pid in procs and procs[pid]:
            tree[pid] = procs[pid]
            frontier += [c for c, s in procs.items() if s.get("PPid") == pid]
    return tree


class MemorySampler:
    """Peak summed RSS of the driver plus Ray workers ("ray::" processes), each worker's largest
    RSS seen and the largest seen under each name a worker ran as ("ray::score_part": the task it
    ran then), sampled every ``period`` seconds."""

    def __init__(self, period: float = 0.2):
        self.period, self.peak_total, self.peak_by_pid, self.peak_by_cmd = period, 0, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            tree = process_tree(me)
            counted = {p: s for p, s in tree.items() if p == me or s.get("cmd", "").startswith("ray::")}
            self.peak_total = max(self.peak_total, sum(s.get("VmRSS", 0) for s in counted.values()))
            for p, s in counted.items():
                self.peak_by_pid[p] = max(self.peak_by_pid.get(p, 0), s.get("VmRSS", 0))
                if p != me:
                    self.peak_by_cmd[s["cmd"]] = max(self.peak_by_cmd.get(s["cmd"], 0), s.get("VmRSS", 0))
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def reset_peak_rss() -> None:
    """Start the driver's VmHWM afresh (Linux: 5 > /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def hwm_mib(pid: int) -> float:
    return _status(pid).get("VmHWM", 0) / 1024
