"""The search shards' memory model: bytes per vector and per shard, and how many shards (pure maths).

A shard holds, per database vector (``bytes_per_vector``):

* flat: the vector, 4·d bytes;
* IVF-PQ: its code and id, m + 8 bytes, times 1 + ``IVF_LIST_SLACK`` while it is built (the
  inverted lists grow like ``std::vector``, up to twice their size; a reloaded shard is exact);
* both: the record id the shard answers with (``name_bytes``: its mean length plus an 8-byte
  Arrow offset).

and once per shard (``fixed_bytes``): for IVF-PQ the coarse centroids (nlist·d·4), the PQ
codebooks (256·d·4) and FAISS's precomputed distance table (nlist·m·256·4, kept only when it is
at most 2 GiB, FAISS's own limit); plus a headroom for the Ray worker, FAISS, one build chunk
and one query batch (``search.shard_headroom_gb``).

``plan_shards`` then takes the fewest shards whose size fits one node's memory, and at least one
shard per node so every node's memory and CPUs serve; each shard must fit on one node.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from study.core.ivf_params import NBITS, ivfpq_vector_bytes

GIB = 1 << 30
FLOAT_BYTES = 4
IVF_LIST_SLACK = 0.5
NAME_OFFSET_BYTES = 8  # Arrow large_string offsets
PRECOMPUTED_TABLE_MAX_BYTES = 2 * GIB  # faiss.cvar.precomputed_table_max_bytes
INDEX_TYPES = ("flat", "ivfpq")


def bytes_per_vector(index: str, d: int, m: int = 0, name_bytes: float = 0.0) -> float:
    """Memory one database vector takes in a shard (see the module docstring)."""
    names = name_bytes + NAME_OFFSET_BYTES
    if index == "flat":
        return FLOAT_BYTES * d + names
    if index == "ivfpq":
        return ivfpq_vector_bytes(m) * (1 + IVF_LIST_SLACK) + names
    raise ValueError(f"unknown index type {index!r}; expected one of {INDEX_TYPES}")


def fixed_bytes(index: str, d: int, nlist: int = 0, m: int = 0) -> float:
    """Memory a shard takes whatever its size: coarse centroids, codebooks, precomputed table."""
    if index == "flat":
        return 0.0
    table = nlist * m * (1 << NBITS) * FLOAT_BYTES
    return nlist * d * FLOAT_BYTES + (1 << NBITS) * d * FLOAT_BYTES + (table if table <= PRECOMPUTED_TABLE_MAX_BYTES else 0)


@dataclass(frozen=True)
class ShardPlan:
    shards: int
    vectors_per_shard: int  # the largest shard
    shard_bytes: float  # the largest shard's memory, headroom included: what each actor reserves
    shards_per_node: int
    nodes: int  # nodes the shards need at that packing
    index_bytes: float  # all shards' vectors and fixed parts, without headroom

    def as_dict(self) -> dict:
        return {k: (round(v) if isinstance(v, float) else v) for k, v in vars(self).items()}


def plan_shards(
    nb: int,
    per_vector: float,
    fixed: float,
    headroom: float,
    memory_per_node: float,
    nodes: int,
    shards: int = 0,
) -> ShardPlan:
    """Shard count and packing. ``shards`` > 0 is taken as given; 0 means the fewest shards of
    which one fits a node, at least one per node (and never more shards than vectors).

    Raises ValueError when not even one vector's shard fits a node.
    """
    if nb < 1 or nodes < 1:
        raise ValueError("plan_shards needs nb >= 1 and nodes >= 1")
    room = memory_per_node - fixed - headroom
    if shards <= 0:
        if room < per_vector:
            raise ValueError(
                f"a node's {memory_per_node / GIB:.1f} GiB cannot hold a shard: its fixed part and headroom "
                f"take {(fixed + headroom) / GIB:.1f} GiB"
            )
        shards = max(math.ceil(nb * per_vector / room), nodes)
    shards = max(1, min(shards, nb))
    largest = math.ceil(nb / shards)
    shard_bytes = largest * per_vector + fixed + headroom
    per_node = int(memory_per_node // shard_bytes)
    return ShardPlan(
        shards=shards,
        vectors_per_shard=largest,
        shard_bytes=shard_bytes,
        shards_per_node=per_node,
        nodes=math.ceil(shards / per_node) if per_node else 0,
        index_bytes=nb * per_vector + shards * fixed,
    )


def shard_bounds(nb: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) slices of nearly equal size; never an empty shard."""
    shards = max(1, min(shards, nb))
    return [(nb * i // shards, nb * (i + 1) // shards) for i in range(shards)]
