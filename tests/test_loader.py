"""The shard reader: only expected fields are decoded, and evaluation shares are exact."""
from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import pytest
import torch

from fer_dist.config import load_config
from fer_dist.data.loader import (EvalSet, MemoryTrain, epoch_order, load_split, resolve_mode,
                                  split_names)
from fer_dist.data.shards import read_manifest
from fer_dist.errors import UserError


def cfg_for(shards: Path, *sets: str):
    return load_config(None, [f"data.shards={shards}", "data.image_size=32",
                              "data.loader_workers=0", *sets])


class _Bomb:
    """Unpickling this writes a marker file: proof that a reader unpickled shard data."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled!"))


def _insert_members(shard: Path, key: str, extra: dict[str, bytes]) -> None:
    """Rewrite a shard with `extra` members inside sample `key` (webdataset groups adjacent members)."""
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for m, data in members:
            tar.addfile(m, io.BytesIO(data))
            if m.name == f"{key}.cls":
                for ext, payload in extra.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))


def test_pickle_members_in_a_shard_are_never_unpickled(tmp_path, shards_small):
    shards = tmp_path / "shards"
    shards.mkdir()
    for f in shards_small.iterdir():
        (shards / f.name).write_bytes(f.read_bytes())
    manifest = read_manifest(shards)
    first = shards / manifest["splits"]["val"]["shards"][0]["name"]
    with tarfile.open(first) as tar:
        key = tar.getnames()[0].split(".")[0]
    marker = tmp_path / "marker.txt"
    bomb = pickle.dumps(_Bomb(marker))
    _insert_members(first, key, {"pyd": bomb, "pickle": bomb, "pth": bomb})
    with tarfile.open(first) as tar:
        assert f"{key}.pyd" in tar.getnames()
    split = load_split(cfg_for(shards), manifest, "val")
    assert len(split) == manifest["splits"]["val"]["count"]
    assert not marker.exists()


def test_eval_shares_are_exact_and_disjoint_whatever_the_worker_count(shards_small):
    manifest = read_manifest(shards_small)
    n = manifest["splits"]["val"]["count"]
    keys = {}
    for workers in (0, 2):
        cfg = cfg_for(shards_small, f"data.loader_workers={workers}")
        shares = [load_split(cfg, manifest, "val", rank, 3) for rank in range(3)]
        assert sum(len(s) for s in shares) == n
        keys[workers] = [s.keys for s in shares]
        assert len(set(k for s in shares for k in s.keys)) == n
    assert keys[0] == keys[2]


def test_streamed_eval_equals_memory_eval(shards_small):
    manifest = read_manifest(shards_small)
    cfg = cfg_for(shards_small)
    mem = EvalSet(cfg, manifest, "val", 1, 2, memory=True)
    streamed = EvalSet(cfg, manifest, "val", 1, 2, memory=False)
    a = list(mem.batches(7))
    b = list(streamed.batches(7))
    torch.testing.assert_close(torch.cat([x[0][0] for x in a]), torch.cat([x[0][0] for x in b]))
    torch.testing.assert_close(torch.cat([x[1] for x in a]), torch.cat([x[1] for x in b]))


def test_memory_epochs_deal_every_rank_the_same_number_of_batches(shards_small):
    manifest = read_manifest(shards_small)
    split = load_split(cfg_for(shards_small), manifest, "train")
    per_rank = [MemoryTrain(split, 8, seed=0, rank=r, world=3) for r in range(3)]
    counts = [sum(len(y) for _, y in src.batches(1, 0)) for src in per_rank]
    assert len(set(counts)) == 1 and counts[0] == len(split) // 3
    seen = torch.cat([epoch_order(len(split), 1, 0, r, 3) for r in range(3)])
    assert len(set(seen.tolist())) == len(seen)             # no sample twice in an epoch
    assert not torch.equal(epoch_order(len(split), 1, 0, 0, 3), epoch_order(len(split), 2, 0, 0, 3))


def test_auto_mode_picks_stream_when_the_split_exceeds_the_budget(shards_small):
    manifest = read_manifest(shards_small)
    assert resolve_mode(cfg_for(shards_small), manifest) == "memory"
    assert resolve_mode(cfg_for(shards_small, "data.memory_budget_gb=1e-9"), manifest) == "stream"


def test_fold_selection_errors_name_the_fix(shards_small):
    manifest = read_manifest(shards_small)
    with pytest.raises(UserError, match="built with --split"):
        split_names(manifest, 1)
    folds = dict(manifest, split={"kind": "folds", "k": 3})
    with pytest.raises(UserError, match="set data.fold to 0..2"):
        split_names(folds, None)
    assert split_names(folds, 1) == {"train": ["fold0", "fold2"], "val": ["fold1"], "test": []}
