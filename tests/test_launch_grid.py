"""Grid files: expansion into runs, their names and overrides, and clear errors for bad files."""
from __future__ import annotations

import re

import pytest
import yaml

from fer_dist.config import apply_override
from fer_dist.errors import UserError
from fer_dist.launch.grid import GridEntry, expand, format_value, load_grid, run_names


def test_grid_is_the_product_of_its_axes_in_file_order():
    entries = expand({"grid": {"data.shards": ["shards/vis", "shards/ir"],
                               "optim.schedule": ["cosine", "none"]}})
    assert [e.values for e in entries] == [
        {"data.shards": "shards/vis", "optim.schedule": "cosine"},
        {"data.shards": "shards/vis", "optim.schedule": "none"},
        {"data.shards": "shards/ir", "optim.schedule": "cosine"},
        {"data.shards": "shards/ir", "optim.schedule": "none"}]
    assert entries[1].overrides() == ["data.shards=shards/vis", "optim.schedule=none"]


def test_runs_entries_times_grid_and_run_names():
    entries = expand({"runs": [{"data.fold": 0}, {"data.fold": 1}],
                      "grid": {"optim.lr": [0.1, 0.05]}})
    assert len(entries) == 4
    assert run_names("viri", entries) == ["viri-fold0-lr0.1", "viri-fold0-lr0.05",
                                          "viri-fold1-lr0.1", "viri-fold1-lr0.05"]
    named = expand({"runs": [{"name": "first", "train.seed": 1}, {"train.seed": 2}]})
    assert run_names("base", named) == ["first", "base-seed2"]
    assert named[0].overrides() == ["name=first", "train.seed=1"]


def test_override_text_parses_back_to_the_same_value():
    for value in ["cosine", "true", "1e-3", "a=b", "shards/x y", 0, 0.05, True, None,
                  [0.9, 0.99], "007"]:
        raw: dict = {}
        apply_override(raw, f"key={format_value(value)}")
        assert raw["key"] == value and type(raw["key"]) is type(value), value


def test_load_grid_reads_yaml(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"grid": {"train.seed": [0, 1, 2]}}))
    assert [e.values["train.seed"] for e in load_grid(path)] == [0, 1, 2]


@pytest.mark.parametrize("raw, message", [
    ([1, 2], "expected a mapping with `grid:` and/or `runs:`"),
    ({"gird": {"a": [1]}}, "unknown section 'gird'"),
    ({"grid": {"optim.lr": 0.1}}, "grid.optim.lr must be a non-empty list"),
    ({"grid": {"optim.lr": []}}, "grid.optim.lr must be a non-empty list"),
    ({"grid": ["optim.lr"]}, "grid must map config keys to lists"),
    ({"runs": {"data.fold": 0}}, "runs must be a list of mappings"),
    ({"runs": [{"optim lr": 1}]}, "runs key 'optim lr' is not a dotted config key"),
    ({"runs": [{}]}, "the grid is empty"),
])
def test_bad_grid_files_are_named_errors(raw, message):
    with pytest.raises(UserError, match="^g.yaml: .*" + re.escape(message)):
        expand(raw, source="g.yaml")


def test_duplicate_run_names_and_missing_file_are_errors(tmp_path):
    with pytest.raises(UserError, match="entries 1 and 2 would both be named 'same'"):
        run_names("base", [GridEntry({"name": "same"}), GridEntry({"name": "same"})], "g.yaml")
    with pytest.raises(UserError, match="grid file .*nope.yaml not found"):
        load_grid(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: [unclosed\n")
    with pytest.raises(UserError, match="bad.yaml is not valid YAML"):
        load_grid(bad)
