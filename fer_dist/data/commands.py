"""`fer-dist synth`, `build-shards` and `verify-shards`: parse flags, call the data package, print."""
from __future__ import annotations

import argparse
from pathlib import Path

from fer_dist import CLASSES
from fer_dist.console import console, err_console
from fer_dist.data import shards, synth, verify
from fer_dist.data.splits import parse_ratios
from fer_dist.data.tree import listing
from fer_dist.errors import UserError

_RAW = argparse.RawDescriptionHelpFormatter

SYNTH_HELP = """\
Write a synthetic VIRI-like data set: OUT/Visible/<Class>/<stem>.JPG and OUT/Infrared/<Class>/<stem>.JPG,
classes Angry, Happy, Neutral, Sad, Surprise, the same stem for both images of a pair (S007_Happy_2:
subject 7, class Happy, image 2). Visible images are drawn faces in cluttered scenes (identity, pose,
lighting); expression lives in the mouth, brows and eyes. Infrared twins show the same face and pose as
a blurred, noisy thermal map, so they are harder to classify. The same seed gives the same files.
The folder is written beside OUT and renamed into place when complete."""

BUILD_HELP = f"""\
Pack class-folder trees (ROOT/<Class>/*.jpg|jpeg|png|bmp, class names in any case) into webdataset
shards plus manifest.json (format: shards/README.md).

modalities:
  visible, infrared   one image per sample
  combined            both trees pooled as independent samples (keys end in _vis / _ir); both images
                      of a pair always land in the same split
  fusion              one sample per visible/infrared pair matched by file stem (<key>.jpg + <key>.ir.jpg)

splits: --split train,val[,test] ratios (stratified by class, seeded) or --folds K (stratified folds
fold0..fold{{K-1}}). --group-regex keeps each subject in one split; its first group (or whole match) on
the file stem names the subject, e.g. '^(S\\d+)_' for S007_Happy_2.

Image bytes are stored untouched unless --resize PX shrinks the shorter side to PX (Lanczos; JPEG q95,
others PNG; smaller images stay untouched) in --workers processes. Every image is checked first (header
and end marker; fully decoded when resized): unreadable ones are listed as an error unless --skip-bad.
Sample keys are the file stems with anything but letters, digits, '_' and '-' turned into '_'. The folder is built beside --out and renamed into place at the
end: a failed build leaves nothing behind.

example:
  fer-dist build-shards --visible data/Visible --infrared data/Infrared --modality fusion \\
      --split 0.7,0.15,0.15 --group-regex '^(S\\d+)_' --out shards/viri-fusion"""

VERIFY_HELP = """\
Re-read every shard of DIR and check it against manifest.json: sha256 and sample count of each shard,
counts per split and class, .cls/.json labels, that every image decodes, that no key repeats and (when
built with --group-regex, or in combined mode) that no subject or pair spans two splits. Prints a
per-split, per-class table; exits 1 on any mismatch."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `synth`, `build-shards` and `verify-shards` subcommands."""
    p = sub.add_parser("synth", help="generate a synthetic VIRI-like visible/infrared data set",
                       description=SYNTH_HELP, formatter_class=_RAW)
    p.add_argument("out", type=Path, metavar="OUT", help="output folder (gets Visible/ and Infrared/)")
    p.add_argument("--subjects", type=int, default=110, help="number of subjects (default 110)")
    p.add_argument("--size", type=int, default=128, help="image side in px (default 128)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--images-per-class", type=int, default=1, metavar="K",
                   help="images per subject and class (default 1: 110 subjects give 550 per modality, "
                        "like VIRI)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing synth folder")
    p.set_defaults(func=synth_command)
    _register_build(sub)
    v = sub.add_parser("verify-shards", help="re-read shards and check them against manifest.json",
                       description=VERIFY_HELP, formatter_class=_RAW)
    v.add_argument("folder", type=Path, metavar="DIR", help="a folder written by build-shards")
    v.set_defaults(func=verify_command)


def _register_build(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("build-shards", help="pack class-folder trees into webdataset shards",
                       description=BUILD_HELP, formatter_class=_RAW)
    b.add_argument("--visible", type=Path, metavar="DIR", help="visible class-folder tree")
    b.add_argument("--infrared", type=Path, metavar="DIR", help="infrared class-folder tree")
    b.add_argument("--modality", choices=shards.MODALITIES, default="visible",
                   help="what a sample is (default visible)")
    b.add_argument("--out", type=Path, required=True, metavar="DIR", help="output shard folder")
    how = b.add_mutually_exclusive_group()
    how.add_argument("--split", default="0.7,0.15,0.15", metavar="R,R[,R]",
                     help="train,val[,test] ratios summing to 1 (default 0.7,0.15,0.15)")
    how.add_argument("--folds", type=int, metavar="K", help="write K cross-validation folds instead")
    b.add_argument("--group-regex", metavar="RE",
                   help="subject pattern on file stems, e.g. '^(S\\d+)_' (default: no grouping)")
    b.add_argument("--seed", type=int, default=0, help="split/shuffle seed (default 0)")
    b.add_argument("--shard-size", type=int, default=shards.DEFAULT_SHARD_SIZE, metavar="N",
                   help=f"at most N samples per shard (default {shards.DEFAULT_SHARD_SIZE}: a 550-image set "
                        f"gives 20 train shards and 5 each for val and test, enough for several "
                        f"ranks x loader workers); shards of a split are filled evenly")
    b.add_argument("--resize", type=int, metavar="PX",
                   help="store images with the shorter side shrunk to PX (default: bytes untouched)")
    b.add_argument("--workers", type=int, default=shards.default_workers(), metavar="N",
                   help="processes for --resize (default: usable cores, at most 8)")
    b.add_argument("--classes", metavar="A,B,...", default=",".join(CLASSES),
                   help=f"class names in index order (default {','.join(CLASSES)})")
    b.add_argument("--skip-bad", action="store_true",
                   help="drop unreadable images (recorded in the manifest) instead of failing")
    b.add_argument("--allow-unpaired", action="store_true",
                   help="fusion: drop files without a twin (recorded in the manifest) instead of failing")
    b.add_argument("--overwrite", action="store_true", help="replace an existing shard folder")
    b.set_defaults(func=build_command)


def synth_command(args: argparse.Namespace) -> int:
    summary = synth.generate(args.out, args.subjects, args.size, args.seed, args.images_per_class,
                             overwrite=args.overwrite)
    console.print(f"wrote {summary.images_per_modality} visible + {summary.images_per_modality} infrared "
                  f"images ({summary.size} px, {summary.subjects} subjects, seed {summary.seed}) to "
                  f"{summary.out} in {summary.seconds:.1f}s")
    return 0


def build_options(args: argparse.Namespace) -> shards.BuildOptions:
    """The parsed flags as BuildOptions (ratios and class names parsed and checked)."""
    classes = tuple(c.strip() for c in args.classes.split(","))
    return shards.BuildOptions(
        out=args.out, visible=args.visible, infrared=args.infrared, modality=args.modality,
        split=parse_ratios(args.split) if args.folds is None else (0.7, 0.15, 0.15), folds=args.folds,
        group_regex=args.group_regex, seed=args.seed, shard_size=args.shard_size, resize=args.resize,
        workers=args.workers, classes=classes, skip_bad=args.skip_bad,
        allow_unpaired=args.allow_unpaired, overwrite=args.overwrite)


def build_command(args: argparse.Namespace) -> int:
    manifest = shards.build_shards(build_options(args))
    n_shards = sum(len(s["shards"]) for s in manifest["splits"].values())
    console.print(verify.counts_table(manifest, title=f"{args.out}: {manifest['modality']}, "
                                                      f"{n_shards} shards"))
    for what in ("skipped", "unpaired_dropped"):
        if manifest[what]:
            console.print(f"{what.replace('_', ' ')}: {len(manifest[what])} files "
                          f"({listing([d['source'] for d in manifest[what]], 5)}), listed in manifest.json",
                          markup=False, style="yellow")
    return 0


def verify_command(args: argparse.Namespace) -> int:
    report = verify.verify_shards(args.folder)
    n_shards = sum(len(s["shards"]) for s in report.manifest["splits"].values())
    title = f"{args.folder}: {report.manifest['modality']}, {n_shards} shards"
    console.print(verify.counts_table(report.manifest, report.found, title=title))
    if report.ok:
        console.print(f"[green]verify-shards: OK[/] {args.folder} ({n_shards} shards, every image decoded)")
        return 0
    for line in report.problems[:20]:
        err_console.print(f"mismatch: {line}", soft_wrap=True, markup=False)
    more = len(report.problems) - 20
    err_console.print(f"verify-shards: FAILED, {len(report.problems)} problems"
                      + (f" ({more} more not shown)" if more > 0 else ""))
    return 1
