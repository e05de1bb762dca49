"""The images every contender receives: data-set JPEGs and two 12-megapixel phone-size JPEGs.

The 12 MP files are generated at the start of each run (deterministically, not committed):
one data-set image upscaled to 4000×3000 (smooth, ~1 MB, like a phone photo of a plain
scene) and a mosaic of data-set images at full resolution (dense detail, ~4 MB, the costly
end of phone photos: a JPEG decoder must read every byte whatever the scale it decodes at).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from testing.samples import dataset_jpegs

PHONE_SIZE = (4000, 3000)


@dataclass(frozen=True)
class Workload:
    """A named list of image files that the load cycles through."""

    name: str
    title: str
    files: tuple[Path, ...]

    def write_list(self, directory: Path) -> Path:
        path = directory / f"{self.name}.txt"
        path.write_text("".join(f"{file}\n" for file in self.files))
        return path


def upscaled_phone_jpeg(source: Path, target: Path) -> Path:
    with Image.open(source) as image:
        image.convert("RGB").resize(PHONE_SIZE, Image.Resampling.BICUBIC).save(target, "JPEG", quality=90)
    return target


def detailed_phone_jpeg(sources: list[Path], target: Path) -> Path:
    """Tile data-set images at full resolution into a 4000×3000 frame: detail everywhere."""
    canvas = Image.new("RGB", PHONE_SIZE)
    tile = 256
    index = 0
    for top in range(0, PHONE_SIZE[1], tile):
        for left in range(0, PHONE_SIZE[0], tile):
            with Image.open(sources[index % len(sources)]) as image:
                canvas.paste(image.convert("RGB"), (left, top))
            index += 1
    canvas.save(target, "JPEG", quality=90)
    return target


def build_workloads(directory: Path, data_set: Path) -> dict[str, Workload]:
    """The data-set set and the two 12 MP files, written under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    jpegs = dataset_jpegs(data_set)
    upscaled = upscaled_phone_jpeg(jpegs[0], directory / "phone-12mp-upscaled.jpg")
    detailed = detailed_phone_jpeg(jpegs, directory / "phone-12mp-detailed.jpg")
    size_mb = lambda path: path.stat().st_size / 1e6  # noqa: E731
    return {
        "dataset": Workload("dataset", f"data-set images (256×256, {len(jpegs)} files)", tuple(jpegs)),
        "12mp": Workload("12mp", f"12 MP JPEG, upscaled ({size_mb(upscaled):.1f} MB)", (upscaled,)),
        "12mp-detailed": Workload(
            "12mp-detailed", f"12 MP JPEG, detailed ({size_mb(detailed):.1f} MB)", (detailed,)
        ),
    }
