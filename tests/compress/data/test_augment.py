"""Channel statistics of a training set, the normalization a trained model keeps."""

import pytest
import torch

from compress.data.augment import channel_stats_of
from compress.errors import CompressError


def test_a_constant_channel_is_refused_by_name_not_as_a_nan_loss_later():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats_of([images])
    assert len(mean) == len(std) == 3 and min(std) > 0
    images[:, 2] = 0
    with pytest.raises(CompressError, match="channel 2 of the training images is constant"):
        channel_stats_of([images])
