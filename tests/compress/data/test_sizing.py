"""An image of any shape becomes the stored square without a detour through a tensor its shape would make
huge, and photographs are stored exactly as before."""

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from compress.data.sizing import MAX_ASPECT, to_storage


def _unbounded(image, side):
    return TF.center_crop(TF.resize(image, side, antialias=True), [side, side])


@pytest.mark.parametrize("shape", [(3, 48, 64), (3, 64, 48), (3, 40, 40), (1, 30, 240), (3, 240, 30)])
def test_images_up_to_the_ratio_are_stored_exactly_as_before(shape):
    image = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(to_storage(image, 32), _unbounded(image, 32))


def test_a_thin_image_is_cut_to_the_ratio_before_it_is_resized(monkeypatch):
    seen = []
    resize = TF.resize
    monkeypatch.setattr(TF, "resize", lambda image, *a, **k: seen.append(tuple(image.shape)) or resize(image, *a, **k))
    thin = torch.randint(0, 256, (3, 1, 400_000), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    stored = to_storage(thin, 32)
    assert stored.shape == (3, 32, 32) and seen == [(3, 1, MAX_ASPECT)]
    tall = thin.transpose(1, 2).contiguous()
    assert to_storage(tall, 32).shape == (3, 32, 32) and seen[-1] == (3, MAX_ASPECT, 1)


def test_the_cut_keeps_the_square_that_is_stored():
    """A smooth thin image: what the cut stores is what the unbounded resize stores, to rounding."""
    x = torch.linspace(0, 255, 2000)
    thin = (x[None, None, :].expand(3, 50, 2000)).round().to(torch.uint8)  # 40:1
    got, want = to_storage(thin, 32).int(), _unbounded(thin, 32).int()
    assert (got - want).abs().max() <= 1
