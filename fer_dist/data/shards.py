"""Building webdataset shards + manifest.json from class-folder trees (atomically), and reading manifests.

The format is described in shards/README.md. A build: read the trees, make samples (one image, or a
visible/infrared pair in fusion mode), check every image (shrinking it with --resize, in a process
pool), split by class and subject, then write each split with webdataset's ShardWriter into a
temporary folder that is renamed into place at the end.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from fer_dist import CLASSES, __version__
from fer_dist.console import progress
from fer_dist.data import splits
from fer_dist.atomic import atomic_folder, check_target
from fer_dist.data.images import Prepared, prepare
from fer_dist.data.tree import ImageFile, compile_group_regex, listing, pair_by_stem, read_tree, subject_of
from fer_dist.errors import UserError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODALITIES = ("visible", "infrared", "combined", "fusion")
DEFAULT_SHARD_SIZE = 20
"""Samples per shard: a 550-image set (train 385) gives 20 train shards and 5 each for val and test."""
TAR_MTIME = 946684800   # fixed member time (2000-01-01): equal inputs give byte-identical shards; an
# int, because a float mtime makes tarfile add a pax header to every member (slower, bigger)


def default_workers() -> int:
    """CPU cores this process may use (Slurm/taskset aware), at most 8."""
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1))


@dataclass
class BuildOptions:
    """Everything `fer-dist build-shards` accepts; the CLI only parses flags into this."""
    out: Path
    visible: Path | None = None
    infrared: Path | None = None
    modality: str = "visible"
    split: tuple[float, ...] = (0.7, 0.15, 0.15)
    folds: int | None = None
    group_regex: str | None = None
    seed: int = 0
    shard_size: int = DEFAULT_SHARD_SIZE
    resize: int | None = None
    workers: int = field(default_factory=default_workers)
    classes: tuple[str, ...] = CLASSES
    skip_bad: bool = False
    allow_unpaired: bool = False
    overwrite: bool = False


@dataclass
class Sample:
    """One shard sample: an image (or a visible/infrared pair) with its label and split group."""
    key: str
    class_index: int
    subject: str | None
    group: str          # samples sharing a group always land in the same split
    modality: str       # visible | infrared | fusion
    image: ImageFile
    ir: ImageFile | None = None

    def files(self) -> list[ImageFile]:
        return [self.image] if self.ir is None else [self.image, self.ir]


def is_shard_folder(folder: Path) -> bool:
    """A folder `build-shards` may replace: one holding a manifest.json."""
    return (folder / MANIFEST).is_file()


def _check_options(opts: BuildOptions) -> None:
    """Fail fast, before any file is read, on flags that cannot work together."""
    if opts.modality not in MODALITIES:
        raise UserError(f"--modality {opts.modality}: choose one of {', '.join(MODALITIES)}")
    for tree in _used_trees(opts.modality):
        if getattr(opts, tree) is None:
            raise UserError(f"--modality {opts.modality} needs --{tree} DIR (a class-folder tree)")
    for flag, value, low in (("--shard-size", opts.shard_size, 1), ("--workers", opts.workers, 1),
                             ("--resize", opts.resize, 16)):
        if value is not None and value < low:
            raise UserError(f"{flag} {value}: must be at least {low}")
    names = [c.lower() for c in opts.classes]
    if not names or len(set(names)) != len(names) or not all(names):
        raise UserError(f"--classes {','.join(opts.classes)}: give distinct, non-empty class names")
    if opts.folds is None:
        splits.check_ratios(opts.split)
    elif opts.folds < 2:
        raise UserError(f"--folds {opts.folds}: cross-validation needs at least 2 folds")
    check_target(Path(opts.out), opts.overwrite, is_shard_folder, "a shard folder (with manifest.json)")


def _used_trees(modality: str) -> list[str]:
    """The trees a modality reads: combined and fusion need both."""
    return [modality] if modality in ("visible", "infrared") else ["visible", "infrared"]


def _single(images: list[ImageFile], modality: str, regex, suffix: str = "") -> list[Sample]:
    out = []
    for image in images:
        subject = subject_of(image, regex)
        out.append(Sample(image.key + suffix, image.class_index, subject, subject or image.key,
                          modality, image))
    return out


def _fusion(visible: list[ImageFile], infrared: list[ImageFile], regex,
            allow_unpaired: bool) -> tuple[list[Sample], list[dict]]:
    pairing = pair_by_stem(visible, infrared)
    lonely = [("visible", i) for i in pairing.visible_only] + [("infrared", i) for i in pairing.infrared_only]
    if lonely and not allow_unpaired:
        raise UserError(f"{len(lonely)} files have no twin with the same stem in the other modality: "
                        f"{listing([str(i.path) for _, i in lonely])}; add the twins, or pass "
                        f"--allow-unpaired to drop them (they are listed in manifest.json)")
    samples = []
    for vis, ir in pairing.pairs:
        subject = subject_of(vis, regex)
        samples.append(Sample(vis.key, vis.class_index, subject, subject or vis.key, "fusion", vis, ir))
    return samples, [{"modality": m, "source": i.rel} for m, i in lonely]


def make_samples(opts: BuildOptions, trees: dict[str, list[ImageFile]]) -> tuple[list[Sample], list[dict]]:
    """Samples for the chosen modality, and the unpaired files dropped (fusion with --allow-unpaired)."""
    regex = compile_group_regex(opts.group_regex)
    if opts.modality == "fusion":
        return _fusion(trees["visible"], trees["infrared"], regex, opts.allow_unpaired)
    if opts.modality == "combined":   # a pair shares its group (the stem), so it never straddles splits
        return (_single(trees["visible"], "visible", regex, "_vis")
                + _single(trees["infrared"], "infrared", regex, "_ir")), []
    return _single(trees[opts.modality], opts.modality, regex), []


def check_images(files: list[ImageFile], resize: int | None, workers: int) -> dict[Path, Prepared]:
    """Check (and with --resize shrink) every file, in a process pool when resizing."""
    paths = [str(f.path) for f in files]
    results: Iterable[Prepared]
    with progress("resizing images" if resize else "checking images", len(paths), "images") as bar:
        if resize and workers > 1 and len(paths) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                chunk = max(1, min(32, len(paths) // (4 * workers)))
                results = list(_advancing(pool.map(prepare, paths, repeat(resize), chunksize=chunk), bar))
        else:
            results = list(_advancing((prepare(p, resize) for p in paths), bar))
    return {f.path: r for f, r in zip(files, results)}


def _advancing(items: Iterable[Prepared], bar) -> Iterator[Prepared]:
    for item in items:
        bar.advance()
        yield item


def drop_bad(samples: list[Sample], prepared: dict[Path, Prepared], modality: dict[Path, str],
             skip_bad: bool) -> tuple[list[Sample], list[dict]]:
    """Without --skip-bad any unreadable image is an error listing them all; with it they are dropped."""
    bad = {p: r.error for p, r in prepared.items() if r.error}
    if not bad:
        return samples, []
    if not skip_bad:
        raise UserError(f"{len(bad)} images cannot be read: "
                        f"{listing([f'{p} ({why})' for p, why in bad.items()], 5)}; fix or remove them, "
                        f"or pass --skip-bad to drop them (they are listed in manifest.json)")
    kept, skipped = [], []
    for sample in samples:
        broken = [f for f in sample.files() if f.path in bad]
        if not broken:
            kept.append(sample)
            continue
        for f in sample.files():
            reason = bad.get(f.path) or f"its twin {broken[0].rel} is unreadable"
            skipped.append({"modality": modality[f.path], "source": f.rel, "reason": reason})
    return kept, skipped


def assign(samples: list[Sample], opts: BuildOptions) -> tuple[list[str], np.ndarray]:
    """Split names and each sample's split index (stratified, group-aware, seeded)."""
    labels = [s.class_index for s in samples]
    totals = np.bincount(labels, minlength=len(opts.classes))
    if opts.folds:
        splits.check_folds(opts.folds, totals.tolist(), opts.classes)
        ratios = [1.0 / opts.folds] * opts.folds
    else:
        ratios = list(opts.split)
    names = splits.split_names(ratios, opts.folds)
    where = splits.assign_groups(labels, [s.group for s in samples], len(opts.classes), ratios, opts.seed)
    splits.check_filled(where, labels, names, opts.classes, opts.group_regex is not None)
    return names, where


def _sample_record(sample: Sample, prepared: dict[Path, Prepared], classes: tuple[str, ...],
                   modality: dict[Path, str]) -> dict:
    """The webdataset dict for one sample: image field(s), cls and json, all bytes."""
    meta = {"class_index": sample.class_index, "class_name": classes[sample.class_index],
            "subject": sample.subject, "source": sample.image.rel, "modality": sample.modality}
    record = {"__key__": sample.key, "cls": str(sample.class_index).encode("ascii")}
    for prefix, image in (("", sample.image), ("ir.", sample.ir)):
        if image is None:
            continue
        ready = prepared[image.path]
        record[prefix + ready.ext] = ready.data if ready.data is not None else image.path.read_bytes()
    if sample.ir is not None:
        meta["ir_source"] = sample.ir.rel
    record["json"] = json.dumps(meta, sort_keys=True).encode("utf-8")
    return record


@dataclass
class _Records:
    """Turns a sample into its webdataset dict, reading (or taking the resized) image bytes."""
    prepared: dict[Path, Prepared]
    classes: tuple[str, ...]
    modality: dict[Path, str]

    def __call__(self, sample: Sample) -> dict:
        return _sample_record(sample, self.prepared, self.classes, self.modality)


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def shard_counts(n: int, shard_size: int) -> list[int]:
    """Sizes of the fewest shards of at most `shard_size` that hold `n` samples, as even as possible."""
    k = math.ceil(n / shard_size)
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def write_split(folder: Path, name: str, samples: list[Sample], records: _Records, shard_size: int,
                bar) -> list[dict]:
    """Write one split as `<name>-000000.tar`...; shard sizes differ by at most one sample."""
    import webdataset as wds   # it imports torch (seconds): deferred so that the CLI starts fast
    counts = shard_counts(len(samples), shard_size)
    starts = set(np.cumsum(counts[:-1]).tolist())
    written: list[str] = []
    with wds.ShardWriter(str(folder / f"{name}-%06d.tar"), maxcount=counts[0], verbose=0,
                         post=written.append, encoder=False, mtime=TAR_MTIME,
                         user="fer-dist", group="fer-dist") as writer:
        for i, sample in enumerate(samples):
            if i in starts:
                writer.next_stream()
            writer.write(records(sample))
            bar.advance()
    return [{"name": Path(f).name, "count": c, "sha256": sha256_file(Path(f))}
            for f, c in zip(written, counts, strict=True)]


def _split_spec(opts: BuildOptions, names: list[str]) -> dict:
    if opts.folds:
        return {"kind": "folds", "k": opts.folds, "group_regex": opts.group_regex}
    return {"kind": "ratio", "ratios": dict(zip(names, opts.split)), "group_regex": opts.group_regex}


def _image_sizes(samples: list[Sample], prepared: dict[Path, Prepared]) -> dict:
    sizes = np.array([prepared[f.path].size for s in samples for f in s.files()])
    return {"min": sizes.min(0).tolist(), "max": sizes.max(0).tolist()}


def write_all(folder: Path, opts: BuildOptions, samples: list[Sample], names: list[str],
              where: np.ndarray, records: _Records) -> dict[str, dict]:
    """Every split, its samples shuffled (seeded) so each shard mixes classes and subjects."""
    result = {}
    with progress("writing shards", len(samples), "samples") as bar:
        for s, name in enumerate(names):
            members = [samples[i] for i in np.flatnonzero(where == s)]
            members = [members[i] for i in np.random.default_rng([opts.seed, s]).permutation(len(members))]
            counts = np.bincount([m.class_index for m in members], minlength=len(opts.classes))
            result[name] = {"count": len(members),
                            "class_counts": {c: int(n) for c, n in zip(opts.classes, counts)},
                            "shards": write_split(folder, name, members, records, opts.shard_size, bar)}
    return result


def build_shards(opts: BuildOptions) -> dict:
    """Build the shard folder `opts.out` (atomically) and return its manifest."""
    _check_options(opts)
    roots = {m: Path(getattr(opts, m)) for m in _used_trees(opts.modality)}
    trees = {m: read_tree(root, opts.classes, f"--{m}") for m, root in roots.items()}
    modality = {f.path: m for m, files in trees.items() for f in files}
    samples, unpaired = make_samples(opts, trees)
    prepared = check_images([f for s in samples for f in s.files()], opts.resize, opts.workers)
    samples, skipped = drop_bad(samples, prepared, modality, opts.skip_bad)
    samples.sort(key=lambda s: s.key)
    names, where = assign(samples, opts)
    manifest = {
        "format_version": FORMAT_VERSION, "created_by": f"fer-dist {__version__}",
        "classes": list(opts.classes), "modality": opts.modality, "seed": opts.seed,
        "split": _split_spec(opts, names),
        "sources": {m: str(root.resolve()) for m, root in roots.items()},
        "resize": opts.resize, "shard_size": opts.shard_size,
        "image_size": _image_sizes(samples, prepared),
        "skipped": skipped, "unpaired_dropped": unpaired, "splits": {}}
    records = _Records(prepared, tuple(opts.classes), modality)
    with atomic_folder(Path(opts.out), opts.overwrite, is_shard_folder,
                       "a shard folder (with manifest.json)") as tmp:
        manifest["splits"] = write_all(tmp, opts, samples, names, where, records)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(folder: str | Path) -> dict:
    """Load and sanity-check `folder/manifest.json`; a UserError names the folder if it is unusable."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UserError(f"{folder} has no {MANIFEST}: build shards there first "
                        f"(fer-dist build-shards ... --out {folder})")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is not readable JSON ({err}); rebuild the shards") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise UserError(f"{path} has format_version {version!r}, this fer-dist reads {FORMAT_VERSION}; "
                        f"rebuild the shards with this version")
    missing = [k for k in ("classes", "modality", "splits") if k not in manifest]
    bad = [n for n, s in manifest.get("splits", {}).items()
           if not isinstance(s, dict) or not {"count", "class_counts", "shards"} <= set(s)]
    if missing or bad:
        raise UserError(f"{path} is incomplete (missing {listing(missing + [f'splits.{n}' for n in bad])}); "
                        f"rebuild the shards")
    return manifest


def split_shard_paths(folder: str | Path, manifest: dict, split: str) -> list[str]:
    """The shard files of one split, in manifest order."""
    if split not in manifest["splits"]:
        raise UserError(f"{folder} has no split '{split}' (it has {', '.join(manifest['splits'])})")
    return [str(Path(folder) / s["name"]) for s in manifest["splits"][split]["shards"]]
