"""Small fixtures shared by several test folders (imported by bare name: tests/ is on sys.path)."""

from pathlib import Path

import numpy as np
from PIL import Image


def make_image_folder(root: Path, classes=("cat", "dog"), per_class: int = 6, size: int = 8,
                      splits=("train", "test")) -> Path:
    """An ImageFolder tree of random PNGs with `train/` and `test/` splits."""
    rng = np.random.default_rng(0)
    for split in splits:
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


MIXED_SIZES = ((40, 30), (50, 70), (33, 33), (96, 64), (21, 45), (64, 64))  # (width, height)


def make_mixed_folder(root: Path, classes=("ant", "bee", "cow"), per_class: int = 4,
                      splits=("train", "test")) -> Path:
    """An ImageFolder tree of mixed sizes and kinds: RGB PNG and JPEG, grayscale, RGBA, palette."""
    rng = np.random.default_rng(1)
    k = 0
    for split in splits:
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                w, h = MIXED_SIZES[k % len(MIXED_SIZES)]
                rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
                kind = k % 5
                if kind == 0:
                    Image.fromarray(rgb).save(d / f"{i}.png")
                elif kind == 1:
                    Image.fromarray(rgb).save(d / f"{i}.jpg", quality=90)
                elif kind == 2:
                    Image.fromarray(rgb[:, :, 0]).save(d / f"{i}.png")  # grayscale
                elif kind == 3:
                    alpha = rng.integers(0, 255, (h, w, 1), dtype=np.uint8)
                    Image.fromarray(np.concatenate([rgb, alpha], axis=2)).save(d / f"{i}.png")  # RGBA
                else:
                    Image.fromarray(rgb).convert("P").save(d / f"{i}.png")  # palette
                k += 1
    return root
