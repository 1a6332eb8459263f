"""Hostile constructor arguments for the architecture registry: each is refused with a ValueError whose
message is one line naming the argument, before any weight is allocated (models are built on the meta
device here, so a bug cannot allocate real memory)."""

import math

import pytest
import torch

from compress.models import UnknownArchError, create_model



def refused(name, needle, **kwargs):
    with pytest.raises(ValueError) as err, torch.device("meta"):
        create_model(name, **kwargs)
    message = str(err.value)
    assert "\n" not in message and needle in message, message
    return message


@pytest.mark.parametrize("name,kwargs,needle", [
    ("vgg11", {"width": math.nan}, "width"),
    ("vgg11", {"width": -1}, "width"),
    ("vgg11", {"width": 0}, "width"),
    ("vgg11", {"width": "0.5"}, "width"),
    ("vgg11", {"num_classes": 0}, "num_classes"),
    ("vgg11", {"num_classes": 1.5}, "num_classes"),
    ("vgg11", {"num_classes": True}, "num_classes"),
    ("resnet18", {"num_classes": -3}, "num_classes"),
    ("vgg11", {"cfg": [-4, "M"]}, "cfg"),
    ("vgg11", {"cfg": [4.5, "M"]}, "cfg"),
    ("vgg11", {"foo": 1}, "foo"),
    ("preresnet21", {}, "9n+2"),
    ("densenet41", {}, "3n+4"),
    ("densenet40", {"growth_rate": math.nan}, "growth_rate"),
    ("resnet18", {"image_size": 0}, "image_size"),
    ("resnet18", {"image_size": math.nan}, "image_size"),
])
def test_absurd_constructor_arguments(name, kwargs, needle):
    refused(name, needle, **kwargs)


@pytest.mark.parametrize("name, needle", [("vgg12", "unknown architecture"), ("../../etc/passwd", "unknown architecture"),
                                          ("", "unknown architecture"), ("os:system", "not an nn.Module class"),
                                          ("os.path:join.x", "has no attribute"),
                                          ("../x:Net", "not of the form package.module:Class")])
def test_unknown_or_hostile_names(name, needle):
    with pytest.raises(UnknownArchError) as err:
        create_model(name)
    assert "\n" not in str(err.value) and needle in str(err.value)


def test_a_name_that_is_not_a_string():
    with pytest.raises(UnknownArchError, match="must be a string"):
        create_model(None)


@pytest.mark.parametrize("name,kwargs", [("vgg11", {"width": math.inf}), ("preresnet20", {"width": math.inf}),
                                         ("vgg11", {"bn_init": math.nan}), ("vgg11", {"bn_init": math.inf})])
def test_non_finite_values_are_refused(name, kwargs):
    refused(name, next(iter(kwargs)), **kwargs)
