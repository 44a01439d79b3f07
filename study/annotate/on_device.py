"""Where an annotator's model runs: the CPU by default, or a GPU after ``to("cuda")`` (the annotate
stage's replicas with ``annotate.gpus_per_replica``). Inputs go to the model's device; what an
annotator returns is always on the CPU."""
from __future__ import annotations


class OnDevice:
    device = "cpu"
    moved = ()  # names of tensors an annotator computed once (text features) that go with the model

    def to(self, device: str):
        self.device = device
        self.model.to(device)
        for name in self.moved:
            setattr(self, name, getattr(self, name).to(device))
        return self
