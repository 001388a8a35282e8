"""Class-folder trees (ROOT/<Class>/<stem>.<ext>): listing, case-insensitive classes, pairing, subjects."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from fer_dist.errors import UserError

IMAGE_EXTS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".bmp": "bmp"}
"""Accepted file suffixes (any case) -> the normalised shard field name."""

LISTED = 10   # how many offending paths an error message names before "and N more"


@dataclass(frozen=True)
class ImageFile:
    """One image of a class-folder tree."""
    path: Path          # the file on disk
    rel: str            # path relative to the tree root, e.g. "Happy/S007_Happy_2.JPG"
    class_index: int
    stem: str           # the file stem as on disk
    key: str            # the sample key derived from the stem (no dots)
    ext: str            # jpg | png | bmp


def sanitize_key(stem: str) -> str:
    """A webdataset-safe key: anything but letters, digits, '_' and '-' becomes '_' (dots included)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem) or "_"


def listing(paths: Sequence[object], limit: int = LISTED) -> str:
    """'a, b, c and 4 more': a short list of offending items for one-line errors."""
    shown = ", ".join(str(p) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _class_folders(root: Path, classes: Sequence[str], flag: str) -> dict[int, Path]:
    """Map each class index to its folder under `root`, matching names case-insensitively."""
    wanted = {name.lower(): i for i, name in enumerate(classes)}
    found: dict[int, Path] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        index = wanted.get(folder.name.lower())
        if index is None:
            raise UserError(f"{folder}: unknown class folder '{folder.name}' (expected "
                            f"{', '.join(classes)}); rename it, or pass --classes to list your classes")
        if index in found:
            raise UserError(f"{found[index]} and {folder} are both class '{classes[index]}' "
                            f"(class names ignore case); merge them into one folder")
        found[index] = folder
    if not found:
        raise UserError(f"{flag} {root} is empty: expected one sub-folder per class "
                        f"({', '.join(classes)}) holding .jpg/.jpeg/.png/.bmp images")
    missing = [classes[i] for i in range(len(classes)) if i not in found]
    if missing:
        raise UserError(f"{flag} {root} has no folder for class {listing(missing)}; add it, or pass "
                        f"--classes with only the classes you have")
    return found


def _images_in(folder: Path, root: Path, index: int) -> list[ImageFile]:
    files = [p for p in sorted(folder.iterdir())
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTS]
    if not files:
        raise UserError(f"class folder {folder} has no images (.jpg/.jpeg/.png/.bmp); "
                        f"add images or remove the folder and its class from --classes")
    return [ImageFile(p, p.relative_to(root).as_posix(), index, p.stem, sanitize_key(p.stem),
                      IMAGE_EXTS[p.suffix.lower()]) for p in files]


def _check_unique_keys(images: list[ImageFile]) -> None:
    seen: dict[str, ImageFile] = {}
    for image in images:
        other = seen.setdefault(image.key, image)
        if other is not image:
            raise UserError(f"{other.path} and {image.path} both give sample key '{image.key}' "
                            f"(keys come from file stems; dots and spaces become '_'): rename one")


def read_tree(root: Path, classes: Sequence[str], flag: str = "--visible") -> list[ImageFile]:
    """Every image of a class-folder tree, sorted; errors name the folder and the fix."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"{flag} folder {root} does not exist; point it at a folder with one "
                        f"sub-folder per class")
    if not root.is_dir():
        raise UserError(f"{flag} {root} is a file; point it at a folder with one sub-folder per class")
    images = [image for index, folder in sorted(_class_folders(root, classes, flag).items())
              for image in _images_in(folder, root, index)]
    _check_unique_keys(images)
    return images


def compile_group_regex(pattern: str | None) -> re.Pattern | None:
    """Compile --group-regex, or explain why it is not a valid regular expression."""
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as err:
        raise UserError(f"--group-regex '{pattern}' is not a valid regular expression: {err}") from None


def subject_of(image: ImageFile, regex: re.Pattern | None) -> str | None:
    """The subject a file belongs to: the regex's first group (or whole match) on its stem."""
    if regex is None:
        return None
    match = regex.search(image.stem)
    if match is None:
        raise UserError(f"{image.path}: stem '{image.stem}' does not match --group-regex "
                        f"'{regex.pattern}'; fix the regex (e.g. '^(S\\d+)_') or the file name")
    return match.group(1) if regex.groups else match.group(0)


@dataclass(frozen=True)
class Pairing:
    """Visible/infrared files matched by stem, plus what matched nothing."""
    pairs: list[tuple[ImageFile, ImageFile]]
    visible_only: list[ImageFile]
    infrared_only: list[ImageFile]


def pair_by_stem(visible: list[ImageFile], infrared: list[ImageFile]) -> Pairing:
    """Match each visible image to the infrared image with the same key; their classes must agree."""
    by_key = {image.key: image for image in infrared}
    pairs = [(v, by_key[v.key]) for v in visible if v.key in by_key]
    clash = [f"{v.path} vs {i.path}" for v, i in pairs if v.class_index != i.class_index]
    if clash:
        raise UserError(f"paired images sit in different class folders: {listing(clash, 3)}; "
                        f"move them so both images of a pair have the same class")
    paired = {v.key for v, _ in pairs}
    return Pairing(pairs, [v for v in visible if v.key not in paired],
                   [i for i in infrared if i.key not in paired])
