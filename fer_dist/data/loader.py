"""Training and evaluation data from webdataset shards, in `memory` or `stream` mode.

memory: each rank decodes a split once into uint8 tensors at training size; an epoch is a seeded
        permutation dealt evenly across ranks (every rank runs the same number of steps).
stream: shards are resampled with a per-(epoch, rank) seed and a fixed number of steps per epoch,
        for data sets that do not fit in memory.
Evaluation is exact in both modes: sample i of a split (in manifest shard order) belongs to rank
i % world_size; nothing is padded or dropped, so ranks may hold unequal counts.
"""
from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import webdataset as wds
from PIL import Image, UnidentifiedImageError

from fer_dist.config import Config
from fer_dist.data.shards import split_shard_paths
from fer_dist.errors import UserError

IMAGE_FIELDS = ("jpg", "png", "bmp")
IR_FIELDS = tuple("ir." + ext for ext in IMAGE_FIELDS)


@dataclass
class SplitTensors:
    """A decoded split: one uint8 [N,3,S,S] tensor per modality branch, labels [N], sample keys."""
    images: list[torch.Tensor]
    labels: torch.Tensor
    keys: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def split_names(manifest: dict, fold: int | None) -> dict[str, list[str]]:
    """Which manifest splits make up train / val / test (folds: all but `fold` train, `fold` validates)."""
    kind = manifest.get("split", {}).get("kind", "ratio")
    if kind == "folds":
        k = int(manifest["split"]["k"])
        if fold is None or not 0 <= fold < k:
            raise UserError(f"the shards hold {k} cross-validation folds: set data.fold to 0..{k - 1}")
        return {"train": [f"fold{i}" for i in range(k) if i != fold], "val": [f"fold{fold}"],
                "test": []}
    if fold is not None:
        raise UserError("data.fold is set but the shards were built with --split, not --folds: "
                        "remove data.fold or rebuild with --folds K")
    return {name: [name] if name in manifest["splits"] else [] for name in ("train", "val", "test")}


def split_count(manifest: dict, parts: list[str]) -> int:
    return sum(int(manifest["splits"][p]["count"]) for p in parts)


def shard_urls(folder: str | Path, manifest: dict, parts: list[str]) -> list[str]:
    """The shard files of several manifest splits, in manifest order."""
    return [url for part in parts for url in split_shard_paths(folder, manifest, part)]


def decode_image(data: bytes, size: int, where: str) -> torch.Tensor:
    """Image bytes -> uint8 [3,size,size]: shorter side to `size`, centre crop (faces stay whole)."""
    try:
        img = Image.open(io.BytesIO(data)).convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"cannot decode image {where}: {err}; run fer-dist verify-shards") from None
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1)


def decode_sample(sample: dict, fusion: bool, size: int) -> tuple[list[torch.Tensor], int, str]:
    """Decode only the fields we expect (image[s] and cls); every other member is ignored unread."""
    key = sample.get("__key__", "?")
    where = f"{sample.get('__url__', '?')}:{key}"
    fields = [IMAGE_FIELDS] + ([IR_FIELDS] if fusion else [])
    images = []
    for names in fields:
        name = next((n for n in names if n in sample), None)
        if name is None:
            raise UserError(f"sample {where} has no {'/'.join(names)} member: rebuild the shards")
        images.append(decode_image(sample[name], size, where))
    try:
        label = int(bytes(sample["cls"]).decode("ascii").strip())
    except (KeyError, ValueError):
        raise UserError(f"sample {where} has no valid .cls member: rebuild the shards") from None
    return images, label, key


def _every_shard(src: Iterator) -> Iterator:
    """Node splitter that splits nothing: every rank reads all shards and selects by index."""
    yield from src


class IndexedShards(torch.utils.data.IterableDataset):
    """Samples of a shard list with their global index; keeps those with index % world == rank.

    Shards are dealt to DataLoader workers, and each sample's global index is its shard's offset
    (from the manifest counts) plus its position, so the selection does not depend on worker count.
    """

    def __init__(self, urls: list[str], counts: list[int], rank: int, world: int, fusion: bool,
                 size: int):
        super().__init__()
        self.urls, self.rank, self.world, self.fusion, self.size = urls, rank, world, fusion, size
        self.offsets = [sum(counts[:i]) for i in range(len(counts))]

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for i in range(wid, len(self.urls), nw):
            ds = wds.WebDataset(self.urls[i], shardshuffle=False, nodesplitter=_every_shard,
                                workersplitter=None, empty_check=False)
            for j, sample in enumerate(ds):
                if (self.offsets[i] + j) % self.world == self.rank:
                    yield self.offsets[i] + j, *decode_sample(sample, self.fusion, self.size)


def _collate(items: list) -> tuple:
    idx, images, labels, keys = zip(*items)
    stacked = [torch.stack([im[b] for im in images]) for b in range(len(images[0]))]
    return torch.tensor(idx), stacked, torch.tensor(labels, dtype=torch.int64), list(keys)


def read_indexed(urls: list[str], counts: list[int], rank: int, world: int, fusion: bool,
                 size: int, workers: int, batch: int = 64) -> Iterator[tuple]:
    """Batches (indices, images, labels, keys) of this rank's share of the shards."""
    ds = IndexedShards(urls, counts, rank, world, fusion, size)
    workers = min(workers, len(urls))
    return iter(torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers,
                                            collate_fn=_collate, persistent_workers=False))


def load_split(cfg: Config, manifest: dict, split: str, rank: int = 0, world: int = 1) -> SplitTensors:
    """Decode this rank's share (index % world == rank) of a split into memory, in index order."""
    parts = split_names(manifest, cfg.data.fold)[split]
    urls = shard_urls(cfg.data.shards, manifest, parts)
    counts = [int(s["count"]) for p in parts for s in manifest["splits"][p]["shards"]]
    fusion = manifest["modality"] == "fusion"
    chunks = list(read_indexed(urls, counts, rank, world, fusion, cfg.data.image_size,
                               cfg.data.loader_workers))
    if not chunks:
        n_branches = 2 if fusion else 1
        empty = torch.empty(0, 3, cfg.data.image_size, cfg.data.image_size, dtype=torch.uint8)
        return SplitTensors([empty] * n_branches, torch.empty(0, dtype=torch.int64), [])
    order = torch.cat([c[0] for c in chunks]).argsort()
    images = [torch.cat([c[1][b] for c in chunks])[order] for b in range(len(chunks[0][1]))]
    labels = torch.cat([c[2] for c in chunks])[order]
    keys = [k for c in chunks for k in c[3]]
    return SplitTensors(images, labels, [keys[i] for i in order.tolist()])


def decoded_bytes(manifest: dict, parts: list[str], size: int) -> int:
    branches = 2 if manifest["modality"] == "fusion" else 1
    return split_count(manifest, parts) * branches * 3 * size * size


def resolve_mode(cfg: Config, manifest: dict) -> str:
    """memory when the decoded training split fits data.memory_budget_gb (mode auto), else stream."""
    if cfg.data.mode != "auto":
        return cfg.data.mode
    parts = split_names(manifest, cfg.data.fold)["train"]
    fits = decoded_bytes(manifest, parts, cfg.data.image_size) <= cfg.data.memory_budget_gb * 2**30
    return "memory" if fits else "stream"


def epoch_order(n: int, epoch: int, seed: int, rank: int, world: int) -> torch.Tensor:
    """This rank's sample order for an epoch: a seeded permutation dealt evenly, tail dropped."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    per_rank = n // world
    return perm[rank::world][:per_rank]


def micro_batches_per_epoch(n_train: int, world: int, batch: int) -> int:
    return math.ceil((n_train // world) / batch)


# ----------------------------------------------------------------------------- training sources

class MemoryTrain:
    """The whole training split decoded once; epochs are seeded permutations dealt across ranks."""

    def __init__(self, split: SplitTensors, batch: int, seed: int, rank: int, world: int):
        self.split, self.batch, self.seed, self.rank, self.world = split, batch, seed, rank, world

    def micro_batches(self) -> int:
        return micro_batches_per_epoch(len(self.split), self.world, self.batch)

    def images_per_epoch(self) -> int:
        return (len(self.split) // self.world) * self.world

    def batches(self, epoch: int, start: int) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        order = epoch_order(len(self.split), epoch, self.seed, self.rank, self.world)
        for m in range(start, self.micro_batches()):
            idx = order[m * self.batch:(m + 1) * self.batch]
            yield [im[idx] for im in self.split.images], self.split.labels[idx]


def _resampled_stream(urls: list[str], seed: int, fusion: bool, size: int, batch: int):
    """An endless, seeded stream of decoded batches drawn from shards sampled with replacement."""
    return wds.DataPipeline(
        wds.ResampledShards(urls, seed=seed, deterministic=True),
        wds.tarfile_to_samples(),
        wds.shuffle(256, initial=64, rng=random.Random(seed)),
        wds.map(lambda s: decode_sample(s, fusion, size)),
        wds.batched(batch, collation_fn=lambda items: (
            [torch.stack([it[0][b] for it in items]) for b in range(len(items[0][0]))],
            torch.tensor([it[1] for it in items], dtype=torch.int64)), partial=False),
    )


class StreamTrain:
    """Shards resampled per (epoch, rank) with a fixed number of micro-batches per epoch."""

    def __init__(self, cfg: Config, manifest: dict, rank: int, world: int):
        parts = split_names(manifest, cfg.data.fold)["train"]
        self.urls = shard_urls(cfg.data.shards, manifest, parts)
        self.fusion = manifest["modality"] == "fusion"
        self.size, self.batch, self.seed = cfg.data.image_size, cfg.train.batch_size, cfg.train.seed
        self.rank, self.world, self.workers = rank, world, cfg.data.loader_workers
        n = split_count(manifest, parts)
        self.steps = cfg.data.steps_per_epoch or max(1, n // (world * self.batch))

    def micro_batches(self) -> int:
        return self.steps

    def images_per_epoch(self) -> int:
        return self.steps * self.batch * self.world

    def batches(self, epoch: int, start: int) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        seed = (self.seed * 1_000_003 + epoch) * 1009 + self.rank
        stream = _resampled_stream(self.urls, seed, self.fusion, self.size, self.batch)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=self.workers)
        # Resuming mid-epoch replays the epoch's stream up to `start` (same seed, same batches).
        for m, item in enumerate(loader):
            if m >= self.steps:
                break
            if m >= start:
                yield item


class EvalSet:
    """This rank's exact share of an evaluation split, from memory or streamed from the shards."""

    def __init__(self, cfg: Config, manifest: dict, split: str, rank: int, world: int, memory: bool):
        self.parts = split_names(manifest, cfg.data.fold)[split]
        self.count = split_count(manifest, self.parts)
        self.cfg, self.manifest, self.rank, self.world = cfg, manifest, rank, world
        self.cached = load_split(cfg, manifest, split, rank, world) if memory and self.parts else None

    def batches(self, batch: int) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        if self.cached is not None:
            for i in range(0, len(self.cached), batch):
                yield [im[i:i + batch] for im in self.cached.images], self.cached.labels[i:i + batch]
            return
        urls = shard_urls(self.cfg.data.shards, self.manifest, self.parts)
        counts = [int(s["count"]) for p in self.parts for s in self.manifest["splits"][p]["shards"]]
        for _, images, labels, _ in read_indexed(urls, counts, self.rank, self.world,
                                                  self.manifest["modality"] == "fusion",
                                                  self.cfg.data.image_size,
                                                  self.cfg.data.loader_workers, batch):
            yield images, labels


def train_source(cfg: Config, manifest: dict, rank: int, world: int) -> MemoryTrain | StreamTrain:
    if resolve_mode(cfg, manifest) == "memory":
        split = load_split(cfg, manifest, "train")
        return MemoryTrain(split, cfg.train.batch_size, cfg.train.seed, rank, world)
    return StreamTrain(cfg, manifest, rank, world)
