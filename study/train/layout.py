"""Where a model's training writes under its directory (no torch, no Ray: read by the stages and
the report tools as well as by the trainer)."""
from __future__ import annotations

MODEL = "model.pt"  # the model after the last epoch
METRICS = "metrics.jsonl"  # one line per epoch
SNAPSHOTS = "snapshots"  # snapshots/model-e<epoch>.pt: the model at each checkpoint before the last


def snapshot_name(epoch: int) -> str:
    return f"model-e{epoch}.pt"
