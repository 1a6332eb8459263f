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
