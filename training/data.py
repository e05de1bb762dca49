"""Image folders in, tensors out: find the classes, split them, load and augment the images."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from classifier.images import load_image_file, resize_for_model

# Where the data set is lives in data_set.py (no torch); its names are part of this API too.
from .data_set import find_data_set, image_files, resolve_data_dir  # noqa: F401


@dataclass(frozen=True)
class Split:
    """A seeded, stratified split of an image folder: file paths and class indices."""

    classes: tuple[str, ...]
    train_files: tuple[Path, ...]
    train_targets: tuple[int, ...]
    val_files: tuple[Path, ...]
    val_targets: tuple[int, ...]

    def summary(self) -> str:
        return (
            f"{len(self.classes)} classes, {len(self.train_files)} training and "
            f"{len(self.val_files)} validation images"
        )


def stratified_split(
    data_dir: str | Path,
    val_fraction: float = 0.2,
    seed: int = 0,
    images_per_class: int | None = None,
) -> Split:
    """Split every class the same way: shuffle with ``seed``, hold out ``val_fraction``."""
    root = Path(data_dir)
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and image_files(p)))
    rng = random.Random(seed)
    train, val = [], []
    for index, name in enumerate(classes):
        files = image_files(root / name)
        rng.shuffle(files)
        if images_per_class:
            files = files[:images_per_class]
        if len(files) < 2:
            raise ValueError(f"Class {name!r} has {len(files)} image(s); a split needs 2 or more.")
        held_out = min(len(files) - 1, max(1, round(len(files) * val_fraction)))
        val += [(f, index) for f in files[:held_out]]
        train += [(f, index) for f in files[held_out:]]
    return Split(
        classes=classes,
        train_files=tuple(f for f, _ in train),
        train_targets=tuple(t for _, t in train),
        val_files=tuple(f for f, _ in val),
        val_targets=tuple(t for _, t in val),
    )


def with_extra_training_images(split: Split, extra_dir: str | Path) -> Split:
    """``split`` with every image of ``extra_dir``/<class>/ added to its training side.

    For the images users corrected (``flask --app app export-feedback DIR``): they are
    trained on, never validated on, so the validation split stays the one earlier models
    were measured on. A folder named after a class the data set does not have is refused.
    """
    root = Path(extra_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"No folder of extra training images at {root}.")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    unknown = [folder.name for folder in folders if folder.name not in split.classes]
    if unknown:
        raise ValueError(
            f"{root} has folders for classes the data set lacks: {', '.join(unknown)}. "
            f"Its classes are {', '.join(split.classes)}."
        )
    extra = [(f, split.classes.index(folder.name)) for folder in folders for f in image_files(folder)]
    return dataclasses.replace(
        split,
        train_files=split.train_files + tuple(f for f, _ in extra),
        train_targets=split.train_targets + tuple(t for _, t in extra),
    )


def load_images(files: Sequence[Path]) -> torch.Tensor:
    """Decode and resize with the service's own code; N×3×224×224 uint8, kept in memory."""
    # The same steps as classifier.images.to_tensor, stopping before the float conversion
    # so that the whole data set fits in memory four times smaller.
    arrays = [np.asarray(resize_for_model(load_image_file(f)), dtype=np.uint8) for f in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Label-preserving changes for overhead imagery; uint8 N×3×H×W in, float [0, 1] out.

    Seen from above, a scene has no "up": the eight flips and quarter turns are all real
    views. Mild crops and lighting changes stand in for other flights over the same place.
    """
    out = images.float().div_(255)
    size = out.shape[-2:]
    for i in range(out.shape[0]):
        picture = out[i]
        turns = int(torch.randint(4, (1,), generator=generator))
        picture = torch.rot90(picture, turns, dims=(1, 2))
        if torch.rand(1, generator=generator) < 0.5:
            picture = picture.flip(2)
        scale = float(torch.empty(1).uniform_(0.75, 1.0, generator=generator))
        crop = [max(8, int(s * scale)) for s in size]
        top = int(torch.randint(size[0] - crop[0] + 1, (1,), generator=generator))
        left = int(torch.randint(size[1] - crop[1] + 1, (1,), generator=generator))
        picture = picture[:, top : top + crop[0], left : left + crop[1]]
        picture = F.interpolate(picture[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        brightness = float(torch.empty(1).uniform_(0.9, 1.1, generator=generator))
        contrast = float(torch.empty(1).uniform_(0.9, 1.1, generator=generator))
        mean = picture.mean()
        out[i] = ((picture - mean) * contrast + mean * brightness).clamp_(0, 1)
    return out
