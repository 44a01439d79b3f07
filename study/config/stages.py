"""The later stages' sections: ``embed`` (with its crop), ``search`` (with IVF-PQ), ``measure``,
``sslmem``, ``report`` and ``ray``."""
from __future__ import annotations

from dataclasses import dataclass, field

from study.config.checks import ADDED, check as _check


@dataclass(frozen=True)
class CropConfig:
    """Which region of a target/reference/holdout image is shown to the model (docs/concepts/ssl-dejavu.md)."""

    rule: str = "background"
    min_side: int = 8
    corner_fraction: float = 0.4

    def __post_init__(self) -> None:
        _check(self.min_side >= 1, "embed.crop.min_side", "must be >= 1 pixel")
        _check(0 < self.corner_fraction <= 1, "embed.crop.corner_fraction", "must be in (0, 1]")


@dataclass(frozen=True)
class EmbedConfig:
    """The embed stage's Ray Data pipeline (study.embed.pipeline).

    ``batch_size``: rows per model forward pass. ``actors``, ``cpus_per_actor``: model replicas and
    CPUs each (0 = sized from the cluster: one replica per GPU with ``ray.use_gpu``, else per CPU
    but one). ``rows_per_file``: most rows in one embedding file. ``write_batch_mb``: embedded rows
    (MiB, all models and views) each write task takes; files hold at most that task's share of a
    set, so this also sets the file size when it is below ``rows_per_file`` rows.
    """

    batch_size: int = 256
    actors: int = 0
    cpus_per_actor: float = 0.0
    rows_per_file: int = 100_000
    write_batch_mb: float = 256.0
    crop: CropConfig = field(default_factory=CropConfig)

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "embed.batch_size", "must be >= 1")
        _check(self.actors >= 0, "embed.actors", "must be >= 0 (0 = one per GPU with ray.use_gpu, else per CPU left)")
        _check(self.cpus_per_actor >= 0, "embed.cpus_per_actor", "must be >= 0 (0 = sized from the cluster)")
        _check(self.rows_per_file >= 1, "embed.rows_per_file", "must be >= 1")
        _check(self.write_batch_mb > 0, "embed.write_batch_mb", "must be > 0")


@dataclass(frozen=True)
class IVFPQConfig:
    """IVF-PQ parameters; 0 = chosen from N, d and memory by the FAISS guidelines
    (``study.core.ivf_params``). ``nprobe`` 0 = the smallest power of two whose recall@k on the
    recall sample reaches ``target_recall``."""

    nlist: int = 0
    code_size: int = 0  # bytes per vector (PQ sub-quantizers of 8 bits)
    nprobe: int = 0
    train_size: int = 0
    target_recall: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("nlist", "code_size", "nprobe", "train_size"):
            _check(getattr(self, key) >= 0, f"search.ivf.{key}", "must be >= 0 (0 = automatic)")
        _check(0 < self.target_recall <= 1, "search.ivf.target_recall", "must be in (0, 1]")


@dataclass(frozen=True)
class SearchConfig:
    """Sharded k-NN (``study.search``). ``shards`` 0 = as many as the memory model needs, at
    least one per node; ``memory_per_node_gb`` 0 = Ray's ``memory`` resource of the smallest node."""

    k: int = 50
    index: str = "flat"
    shards: int = 0
    metric: str = "l2_normalized"
    query_batch_size: int = 1024
    cpus_per_shard: float = 0.5
    gpus_per_shard: float = 0.0
    memory_per_node_gb: float = 0.0
    shard_headroom_gb: float = 1.0
    max_restarts: int = 3
    rows_per_file: int = 100_000
    recall_queries: int = 1000
    ivf: IVFPQConfig = field(default_factory=IVFPQConfig)
    representations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check(self.k >= 1, "search.k", "must be >= 1")
        _check(self.index in ("flat", "ivfpq"), "search.index", "must be 'flat' (exact) or 'ivfpq'")
        _check(self.shards >= 0, "search.shards", "must be >= 0 (0 = from the memory model)")
        _check(self.metric in ("l2", "l2_normalized"), "search.metric", "must be 'l2' or 'l2_normalized'")
        _check(self.query_batch_size >= 1, "search.query_batch_size", "must be >= 1")
        _check(self.cpus_per_shard > 0, "search.cpus_per_shard", "must be > 0")
        _check(self.gpus_per_shard >= 0, "search.gpus_per_shard", "must be >= 0 (0 = CPU shards)")
        _check(self.memory_per_node_gb >= 0, "search.memory_per_node_gb", "must be >= 0 (0 = from Ray)")
        _check(self.shard_headroom_gb >= 0, "search.shard_headroom_gb", "must be >= 0")
        _check(self.max_restarts >= 0, "search.max_restarts", "must be >= 0")
        _check(self.rows_per_file >= 1, "search.rows_per_file", "must be >= 1")
        _check(self.recall_queries >= 1, "search.recall_queries", "must be >= 1")


@dataclass(frozen=True)
class MeasureConfig:
    quantiles: tuple[float, ...] = (0.05, 0.2, 1.0)
    ks: tuple[int, ...] = (1, 10, 100)
    top_n: int = 3
    headline_rule: str = "top_n"  # the VLM headline's prediction rule: union or top_n
    top_fractions: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)
    utility_records: int = 1000
    zero_shot_prompt: str | None = None  # e.g. "a photo of a {}"; None: the data's own template
    curve_points: int = 20
    bootstrap: int = 1000
    permutations: int = 2000
    confidence_level: float = 0.95
    seed: int = 0
    # The one-model test's naive-Bayes predictor (SSL): the tagger of what a crop shows
    # (study.kinds.ssl_dejavu.taggers; "" turns the test off) and its add-alpha smoothing. "auto"
    # (the default): synthetic_background where data.source is synthetic, whose captions name the
    # crop's background, and off on other sources, whose captions name the foreground (the label
    # the predictor must not see); the resolved value is saved with the run.
    one_model_tagger: str = "auto"
    one_model_alpha: float = 1.0
    # The naive-Bayes predictor's scores: smoothed (add-alpha over the classes, normalised,
    # confidence = minus their entropy) or published (the reference code's count ratios with 1e-10
    # for an unseen pair, confidence = the top class's joint probability).
    one_model_naive_bayes: str = field(default="smoothed", metadata=ADDED)
    # The most attacked records a VLM statistics task holds: a study with more is split into id
    # ranges of about this many, one task each (memory per task ~1 KiB a record); the numbers do
    # not depend on it, up to the rounding of sums in another order (~1e-16).
    records_per_task: int = field(default=1_000_000, metadata=ADDED)
    # The most records of a side (public, attacked) one block of the measure stage's per-record
    # tables holds (VLM: object sets and captions; SSL: labels): a larger side is built and read
    # in id ranges of about this many, one task each (a VLM block's task peaks at ~0.5 KiB a record
    # over its worker's ~0.5 GiB: ~2.8 GiB at the default); the numbers do not depend on it.
    records_per_table_block: int = field(default=5_000_000, metadata=ADDED)
    # How many records a top fraction q of n holds (the SSL test's top q, the VLM sample level's
    # top fractions): ceil, max(1, ceil(q n)); floor, the published int(q n) (at least 1).
    top_q_size: str = field(default="ceil", metadata=ADDED)
    # The VLM sample level (study.core.sample_level): its rankings (max_pred_gap, crct_pred,
    # min_dist), the records it ranks (both sides pooled, or the target side alone as published)
    # and its F (per record, averaged; or from_means, the published F of the mean precision and
    # mean recall).
    sample_rankings: tuple[str, ...] = field(default=("max_pred_gap",), metadata=ADDED)
    sample_sides: str = field(default="both", metadata=ADDED)
    sample_f: str = field(default="per_record", metadata=ADDED)
    # The VLM one-model test as published: a pretrained sentence-transformers model (a folder,
    # SentenceTransformer.save's output, local or at any fsspec URI) is the reference, and the
    # attacked model's text tower searches the public captions as it does (study.kinds.vlm_dejavu
    # .text_model); None: off.
    text_model: str | None = field(default=None, metadata=ADDED)

    def __post_init__(self) -> None:
        _check(self.one_model_alpha > 0, "measure.one_model_alpha", "must be > 0")
        _check(self.one_model_naive_bayes in ("smoothed", "published"), "measure.one_model_naive_bayes",
               "must be smoothed or published")
        _check(self.records_per_task >= 1, "measure.records_per_task", "must be >= 1")
        _check(self.records_per_table_block >= 1, "measure.records_per_table_block", "must be >= 1")
        _check(self.top_q_size in ("ceil", "floor"), "measure.top_q_size", "must be ceil or floor")
        _check(bool(self.sample_rankings) and set(self.sample_rankings) <= {"max_pred_gap", "crct_pred", "min_dist"},
               "measure.sample_rankings", "choose from max_pred_gap, crct_pred, min_dist")
        _check(self.sample_sides in ("both", "target"), "measure.sample_sides", "must be both or target")
        _check(self.sample_f in ("per_record", "from_means"), "measure.sample_f", "must be per_record or from_means")
        _check(all(0 < q <= 1 for q in self.quantiles) and self.quantiles, "measure.quantiles", "must be in (0, 1]")
        _check(all(k >= 1 for k in self.ks) and self.ks, "measure.ks", "must be >= 1")
        _check(self.top_n >= 1, "measure.top_n", "must be >= 1")
        _check(all(0 < f <= 1 for f in self.top_fractions) and self.top_fractions, "measure.top_fractions", "must be in (0, 1]")
        _check(self.utility_records >= 1, "measure.utility_records", "must be >= 1")
        _check(self.zero_shot_prompt is None or "{}" in self.zero_shot_prompt, "measure.zero_shot_prompt",
               "must contain {} where the class name goes")
        _check(self.curve_points >= 2, "measure.curve_points", "must be >= 2")
        _check(self.bootstrap >= 10, "measure.bootstrap", "must be >= 10")
        _check(self.permutations >= 10, "measure.permutations", "must be >= 10")
        _check(0.5 < self.confidence_level < 1, "measure.confidence_level", "must be in (0.5, 1)")


@dataclass(frozen=True)
class SSLMemConfig:
    """SSLMem (docs/concepts/sslmem.md): n augmented views per record, scored under both encoders.

    The splits play the paper's sets: shared = S_S, target = S_C (candidates, encoder f = model A
    trains on S_S and S_C), reference = S_I (g = model B on S_S and S_I), holdout = S_E (never
    trained on). ``layers`` adds intermediate modules of the encoder by dotted name (e.g.
    ``backbone.layer3`` of a ResNet, ``backbone.5`` of the small CNN), globally average-pooled.
    A candidate counts as highly memorized when its score exceeds the ``high_quantile`` quantile of
    the scores of S_E (of S_I without an S_E)."""

    views: int = 5
    representations: tuple[str, ...] = ("projector", "backbone")
    layers: tuple[str, ...] = ()
    high_quantile: float = 0.95
    seed: int = 0
    # Also the scores as the authors normalise them: over the range (max - min) of the candidates'
    # raw scores (a third score kind, "range", with its own tests).
    range_normalised: bool = field(default=False, metadata=ADDED)

    def __post_init__(self) -> None:
        _check(self.views >= 1, "sslmem.views", "must be >= 1")
        _check(all(r in ("projector", "backbone") for r in self.representations), "sslmem.representations",
               "choose from projector, backbone (intermediate modules go in sslmem.layers)")
        _check(bool(self.representations) or bool(self.layers), "sslmem.representations",
               "name at least one representation or layer")
        _check(len(set(self.layers)) == len(self.layers) and all(self.layers), "sslmem.layers",
               "must be distinct, non-empty module names")
        _check(0 < self.high_quantile < 1, "sslmem.high_quantile", "must be in (0, 1)")

    def spaces(self) -> tuple[str, ...]:
        """What is scored: the representations, then the layers (each a space of its own)."""
        return tuple(self.representations) + tuple(self.layers)


@dataclass(frozen=True)
class ReportConfig:
    gallery_size: int = 8
    neighbors_shown: int = 5

    def __post_init__(self) -> None:
        _check(self.gallery_size >= 0, "report.gallery_size", "must be >= 0")
        _check(self.neighbors_shown >= 0, "report.neighbors_shown", "must be >= 0")


@dataclass(frozen=True)
class RayConfig:
    """How to reach Ray: ``address`` None starts a local instance (or joins the job's cluster).

    ``use_gpu`` gives each training worker and embedding replica one GPU (the driver of a Ray job
    often runs on a CPU-only head node, so this is a setting, not a guess).
    """

    address: str | None = None
    num_cpus: int | None = None
    use_gpu: bool = False
    # A stage that fails because Ray lost a node, a worker process or an actor's host is run
    # again (finished parts are reused) up to this many times before the study stops.
    stage_retries: int = 2
    # Local paths in the config (output root, inputs) are on a file system every node mounts (NFS,
    # ...): without it a study on several nodes, or in a Ray job, refuses them.
    shared_paths: bool = False
    # On a cluster the study joined: how long to wait (asking the autoscaler) for a node that can
    # hold a training worker before giving up with an error. The study's own instance: no wait.
    resource_wait_s: float = 600.0
    # The study's own instance starts Ray's dashboard (http://127.0.0.1:8265: tasks, actors, logs
    # while it runs); false saves its start (~3 CPU-seconds) on a small machine. A joined cluster
    # keeps whatever it was started with.
    dashboard: bool = True

    def __post_init__(self) -> None:
        _check(self.stage_retries >= 0, "ray.stage_retries", "must be >= 0")
        _check(self.resource_wait_s >= 0, "ray.resource_wait_s", "must be >= 0 seconds")
        # One CPU cannot hold an embedding replica and Ray Data's read tasks at once: the embed
        # stage would stall without an error.
        _check(self.num_cpus is None or self.num_cpus >= 2, "ray.num_cpus", "must be at least 2 (or unset: all CPUs)")
