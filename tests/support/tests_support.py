"""Small fixtures shared by several test folders (imported by bare name: tests/ is on sys.path)."""

from pathlib import Path

import numpy as np
import torch
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


# A user's own network, as a user would write it: residual add, concatenation, depthwise and grouped
# convolutions, squeeze-excitation, a constructor with its own arguments.
USER_NET_SOURCE = '''
import torch
from torch import nn


class SqueezeExcite(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.fc1 = nn.Conv2d(c, max(1, c // r), 1)
        self.fc2 = nn.Conv2d(max(1, c // r), c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.se = SqueezeExcite(c)

    def forward(self, x):
        y = torch.relu(self.bn1(self.dw(x)))
        y = self.se(self.bn2(self.pw(y)))
        return torch.relu(x + y)


class MyNet(nn.Module):
    def __init__(self, width=16, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.block = Block(width)
        self.left = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, groups=4, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(2 * width), nn.ReLU())
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.block(self.stem(x))
        x = torch.cat([self.left(x), self.right(x)], 1)
        return self.fc(self.head(x).mean((2, 3)))


class NotAModule:
    pass
'''


def write_user_module(folder: Path, name: str = "mynets") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(USER_NET_SOURCE)
    return path


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


def randomize_bn(model: torch.nn.Module, seed: int = 0, stats: bool = True) -> torch.nn.Module:
    """Spread-out BN γ (some near zero, as after sparse training) and β, for pruning tests; with `stats`,
    random running statistics too. Every BN draws from one seeded generator, in `bn_layers` order."""
    from compress import slimming

    gen = torch.Generator().manual_seed(seed)
    for bn in slimming.bn_layers(model):
        n = bn.num_features
        bn.weight.data = torch.rand(n, generator=gen) + 0.05
        bn.bias.data = torch.randn(n, generator=gen) * 0.2
        if stats:
            bn.running_mean.data = torch.randn(n, generator=gen) * 0.1
            bn.running_var.data = torch.rand(n, generator=gen) + 0.5
    return model.eval()


def _lively_bn(model: torch.nn.Module, g: torch.Generator) -> torch.nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model.eval()


def lively_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN affine and statistics, in eval mode (`lively` without scaling a classifier's logits:
    for networks that have none, such as detectors)."""
    return _lively_bn(model, torch.Generator().manual_seed(seed))


def lively(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN statistics/affine and logits of order 1, so parity checks compare real signals
    (a freshly initialised net has identical BN layers and logits near zero)."""
    g = torch.Generator().manual_seed(seed)
    _lively_bn(model, g)
    with torch.no_grad():
        last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        logits = model(torch.randn(16, 3, 32, 32, generator=g))
        scale = 3.0 / max(float(logits.std()), 1e-12)
        last.weight.mul_(scale)
        if last.bias is not None:
            last.bias.mul_(scale)
    return model


def tiny_data(n=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.randint(0, 50, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    images[:, labels % 3] = images[:, labels % 3] + 150  # learnable: class shows in colour
    from compress.data import ImageSet

    return ImageSet(images, labels, ["a", "b", "c", "d"])


def stopped_after_first_save(monkeypatch, call) -> None:
    """Run `call()` (a training stage) stopped by KeyboardInterrupt right after it saved its first resumable
    state, as a kill between epochs would stop it; later calls train normally."""
    import pytest

    import compress.training as training

    real = training._save_state

    def save_then_stop(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "_save_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        call()
    monkeypatch.setattr(training, "_save_state", real)
