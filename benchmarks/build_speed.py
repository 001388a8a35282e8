"""How fast are `synth` and `build-shards` compared with plain `tar cf` of the same files?

One run measures, on a fresh synthetic set (default 110 subjects at 128 px, 550 pairs):
synth time; build-shards time (pass-through and --resize) for visible and fusion; and `tar cf` of
the same image files. Times are medians of --repeats runs; ratios against tar are what to compare
across machines.

    .venv/bin/python benchmarks/build_speed.py [--subjects 110] [--size 128] [--resize 64]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_dist.data.shards import BuildOptions, build_shards, default_workers  # noqa: E402
from fer_dist.data.synth import generate  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Median wall time of `fn()` over `repeats` runs."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def tar_time(root: Path, folders: list[str], out: Path, repeats: int) -> float:
    return timed(lambda: subprocess.run(["tar", "cf", str(out), "-C", str(root), *folders], check=True),
                 repeats)


def build_time(root: Path, out: Path, modality: str, resize: int | None, workers: int,
               repeats: int) -> float:
    opts = BuildOptions(out=out, visible=root / "Visible", infrared=root / "Infrared", modality=modality,
                        resize=resize, workers=workers, overwrite=True)
    return timed(lambda: build_shards(opts), repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subjects", type=int, default=110)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--resize", type=int, default=64)
    p.add_argument("--workers", type=int, default=default_workers())
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fer-dist-bench-"))
    try:
        root = work / "synth"
        t0 = time.perf_counter()
        summary = generate(root, args.subjects, args.size, seed=0)
        synth_s = time.perf_counter() - t0
        print(f"\nsynth: {summary.images_per_modality} pairs at {args.size} px in {synth_s:.2f}s "
              f"({2 * summary.images_per_modality / synth_s:.0f} images/s)\n")
        rows = []
        for modality, folders in (("visible", ["Visible"]), ("fusion", ["Visible", "Infrared"])):
            tar = tar_time(root, folders, work / "same.tar", args.repeats)
            plain = build_time(root, work / "shards", modality, None, args.workers, args.repeats)
            small = build_time(root, work / "shards", modality, args.resize, args.workers, args.repeats)
            rows.append((modality, tar, plain, small))
        print(f"\n{'modality':10}{'tar cf':>10}{'build':>10}{'build --resize':>16}"
              f"{'build/tar':>11}{'resize/tar':>12}{'resize/build':>14}")
        for modality, tar, plain, small in rows:
            print(f"{modality:10}{tar:>9.3f}s{plain:>9.3f}s{small:>15.3f}s"
                  f"{plain / tar:>11.1f}{small / tar:>12.1f}{small / plain:>14.1f}")
        print(f"\n(median of {args.repeats}; build times are in-process build_shards calls, no interpreter "
              f"start; --resize {args.resize} with {args.workers} workers)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
