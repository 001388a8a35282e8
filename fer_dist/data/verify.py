"""Re-reading a shard folder against its manifest: checksums, counts, labels, decodable images, no leaks."""
from __future__ import annotations

import json
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from rich.table import Table

from fer_dist.console import progress
from fer_dist.data.images import decode_check
from fer_dist.data.shards import read_manifest, sha256_file

IMAGE_FIELDS = ("jpg", "png", "bmp")
PAIR_SUFFIXES = ("_vis", "_ir")


@dataclass
class VerifyReport:
    """What verify-shards found: per split and class counts, and every mismatch as one line."""
    folder: Path
    manifest: dict
    found: dict[str, Counter] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _tar_samples(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {field: bytes}) for consecutive members sharing a key, as webdataset groups them."""
    key, fields = None, {}
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            base = member.name.rsplit("/", 1)[-1]
            this, _, ext = base.partition(".")
            if this != key and key is not None:
                yield key, fields
                fields = {}
            key = this
            fields[ext] = tar.extractfile(member).read()
    if key is not None:
        yield key, fields


class _Verifier:
    """Checks samples one by one, remembering keys and groups to catch duplicates and leaks."""

    def __init__(self, folder: Path, manifest: dict, report: VerifyReport):
        self.folder, self.manifest, self.report = folder, manifest, report
        self.classes = manifest["classes"]
        self.grouped = bool(manifest.get("split", {}).get("group_regex"))
        self.key_split: dict[str, str] = {}
        self.group_split: dict[str, str] = {}

    def problem(self, text: str) -> None:
        self.report.problems.append(text)

    def shard(self, split: str, entry: dict, counter: Counter, bar) -> None:
        path = self.folder / entry["name"]
        if not path.is_file():
            self.problem(f"{path}: shard listed in the manifest is missing")
            return
        if sha256_file(path) != entry.get("sha256"):
            self.problem(f"{path}: sha256 differs from the manifest (the file changed or is damaged)")
        n = 0
        try:
            for key, fields in _tar_samples(path):
                n += 1
                self.sample(split, f"{entry['name']}:{key}", key, fields, counter)
                bar.advance()
        except (tarfile.TarError, OSError, EOFError) as err:
            self.problem(f"{path}: not a readable tar ({err})")
        if n != entry.get("count"):
            self.problem(f"{path}: {n} samples, manifest says {entry.get('count')}")

    def _image(self, where: str, fields: dict[str, bytes], prefix: str) -> None:
        present = [f for f in IMAGE_FIELDS if prefix + f in fields]
        if len(present) != 1:
            self.problem(f"{where}: expected one {prefix}jpg/png/bmp member, found {len(present)}")
            return
        error = decode_check(fields[prefix + present[0]])
        if error:
            self.problem(f"{where}.{prefix}{present[0]}: cannot decode ({error})")

    def _label(self, where: str, fields: dict[str, bytes]) -> tuple[str, dict] | None:
        """(class name, json) of a sample whose .cls and .json agree with each other and the manifest."""
        try:
            index = int(fields["cls"].decode("ascii"))
            meta = json.loads(fields["json"])
        except (KeyError, ValueError, UnicodeDecodeError):
            meta = None
        if not isinstance(meta, dict):
            self.problem(f"{where}: missing or unreadable .cls/.json member")
            return None
        if not 0 <= index < len(self.classes) or meta.get("class_index") != index \
                or meta.get("class_name") != self.classes[index]:
            self.problem(f"{where}: label mismatch (cls {index}, json {meta.get('class_index')}/"
                         f"{meta.get('class_name')})")
            return None
        modality = self.manifest["modality"]
        allowed = ("visible", "infrared") if modality == "combined" else (modality,)
        if meta.get("modality") not in allowed:
            self.problem(f"{where}: json modality {meta.get('modality')!r}, manifest says {modality}")
        return self.classes[index], meta

    def _leak(self, where: str, group: str, split: str) -> None:
        """A subject (or pair) must stay inside one split."""
        first = self.group_split.setdefault(group, split)
        if first != split:
            self.problem(f"{where}: {group} is in both '{first}' and '{split}'")

    def sample(self, split: str, where: str, key: str, fields: dict[str, bytes], counter: Counter) -> None:
        if key in self.key_split:
            self.problem(f"{where}: key '{key}' appears twice (first in '{self.key_split[key]}')")
        self.key_split.setdefault(key, split)
        self._image(where, fields, "")
        if self.manifest["modality"] == "fusion":
            self._image(where, fields, "ir.")
        label = self._label(where, fields)
        if label is None:
            return
        counter[label[0]] += 1
        if self.grouped:
            self._leak(where, f"subject '{label[1].get('subject')}'", split)
        if self.manifest["modality"] == "combined":
            base = key.removesuffix(PAIR_SUFFIXES[0]).removesuffix(PAIR_SUFFIXES[1])
            self._leak(where, f"the visible/infrared pair '{base}'", split)


def _compare_counts(report: VerifyReport, split: str, spec: dict, found: Counter) -> None:
    total = sum(found.values())
    if total != spec["count"]:
        report.problems.append(f"split '{split}': {total} samples, manifest says {spec['count']}")
    for name, expected in spec["class_counts"].items():
        if found.get(name, 0) != expected:
            report.problems.append(f"split '{split}', class '{name}': {found.get(name, 0)} samples, "
                                   f"manifest says {expected}")


def _unlisted(folder: Path, manifest: dict) -> list[str]:
    listed = {s["name"] for spec in manifest["splits"].values() for s in spec["shards"]}
    return [f"{p}: shard not listed in the manifest" for p in sorted(folder.glob("*.tar"))
            if p.name not in listed]


def verify_shards(folder: str | Path) -> VerifyReport:
    """Re-read every shard of `folder`: sha256, counts per shard/split/class, labels, decoding, leaks."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    report = VerifyReport(folder, manifest)
    checker = _Verifier(folder, manifest, report)
    total = sum(int(spec["count"]) for spec in manifest["splits"].values())
    with progress("verifying shards", total, "samples") as bar:
        for split, spec in manifest["splits"].items():
            found = report.found.setdefault(split, Counter())
            for entry in spec["shards"]:
                checker.shard(split, entry, found, bar)
            _compare_counts(report, split, spec, found)
    report.problems += _unlisted(folder, manifest)
    return report


def counts_table(manifest: dict, found: dict[str, Counter] | None = None, title: str = "") -> Table:
    """Samples per split (columns) and class (rows); with `found`, mismatches show as found/expected."""
    table = Table(title=title or None, title_justify="left")
    table.add_column("class")
    for split in manifest["splits"]:
        table.add_column(split, justify="right")
    rows = [(name, {s: spec["class_counts"].get(name, 0) for s, spec in manifest["splits"].items()})
            for name in manifest["classes"]]
    rows.append(("total", {s: spec["count"] for s, spec in manifest["splits"].items()}))
    for name, expected in rows:
        cells = []
        for split, want in expected.items():
            got = want if found is None else (sum(found.get(split, Counter()).values()) if name == "total"
                                               else found.get(split, Counter()).get(name, 0))
            cells.append(f"{want}" if got == want else f"[bold red]{got}/{want}[/]")
        table.add_row(f"[bold]{name}[/]" if name == "total" else name, *cells)
    return table
