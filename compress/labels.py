"""The data's class list against a model's: the one check before any accuracy is measured or recorded.

Labels are indices into the data's class list, so data with the same number of classes under other names,
or in another order, scores a model against the wrong logits, and the top-1 still looks plausible. (The
runtime, which imports no compress code, makes the same comparison for `compress bench` in
runtime/bench.py and reports it as a warning.)
"""

from __future__ import annotations

import unicodedata

from compress.errors import CompressError


def check_class_names(classes: list[str], data_classes: list[str], owner: str = "the model",
                      where: str = "the model") -> None:
    """Refuse data whose classes are not `classes` (those of `owner`, e.g. a file's path), name for name
    and in order; `where` names the model in the message's pair ("in the file")."""
    if len(classes) != len(data_classes):
        raise CompressError(f"{owner} has {len(classes)} classes, the data {len(data_classes)}")
    for i, (ours, theirs) in enumerate(zip(classes, data_classes)):
        if ours != theirs:
            hint = ""
            if list(classes) == placeholder_names(len(classes)):
                hint = ("; its classes are unnamed (class0, class1, ...): give their names "
                        "(compress import --classes, or meta={'classes': [...]} when exporting a module)")
            if unicodedata.normalize("NFC", ours) == unicodedata.normalize("NFC", theirs):
                hint = ("; they are the same letters, written in two Unicode forms (NFC and NFD: macOS "
                        f"writes folder names in NFD): {ascii(theirs)} against {ascii(ours)}")
            raise CompressError(f"the data's class names differ from {owner}'s (class {i} is {theirs!r} in the "
                                f"data, {ours!r} in {where}); labels would not line up{hint}")


def placeholder_names(n: int) -> list[str]:
    """The names a model gets when nobody named its n classes; no data's label order can be checked
    against them."""
    return [f"class{i}" for i in range(n)]
