"""A dataset as the stages use it, and the one rule that sizes images for a model.

The rule (`sized_for`): a model whose input is N×N sees the data at the images' own size when that is
N×N (no resize, the existing decoded cache), and resized to N×N by the evaluation transform otherwise,
which includes folders of mixed sizes (they raise `MixedImageSizes` at their own size). An explicit
`input_size` is used as given.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from compress.data.load import TORCHVISION_SETS, load_dataset, resolve_spec
from compress.data.protocol import ImageData
from compress.errors import MixedImageSizes


def sized_for(load: Callable[[int | None], ImageData], side: int) -> ImageData:
    """`load(size)` for a model whose input is `side`×`side`: own size when it is that, else `load(side)`."""
    try:
        data = load(None)
    except MixedImageSizes:
        return load(side)
    if tuple(data.input_size[1:]) == (side, side):
        return data
    return load(side)


def load_dataset_for(spec: str, split: str, input_size, limit: int | None = None, seed: int = 0, **kw) -> ImageData:
    """One split as a model with `input_size` ([C, H, W] or N) sees it (the rule above)."""
    side = int(input_size) if isinstance(input_size, int) else int(input_size[-1])
    return sized_for(lambda size: load_dataset(spec, split, limit=limit, seed=seed, input_size=size, **kw), side)


def data_source(spec: str | None) -> Path | None:
    """The local file or folder a data spec reads (COMPRESS_DATA for ``cifar10``), or None when there is
    none (torchvision's download): what the output guard protects as an input."""
    if not spec:
        return None
    source = Path(resolve_spec(spec)).expanduser()
    return source if source.exists() else None


@dataclass(frozen=True)
class DataOptions:
    """A dataset as the stages use it: spec, stratified limits, seed, image size and loading mode.

    `input_size` N makes every image N×N; without it, `for_model` returns a copy sized for a model by the
    rule above. Copies share one cache, so each split is loaded once per size across the stages of a run.
    """

    spec: str
    train_limit: int | None = None
    test_limit: int | None = None
    seed: int = 0
    input_size: int | None = None
    mode: str = "auto"
    model_size: int | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        from compress.limits import check_seed

        check_seed(self.seed, "the data seed")

    def split(self, name: str) -> ImageData:
        if self.input_size is not None:
            return self._load(name, self.input_size)
        if self.model_size is None:
            return self._load(name, None)
        return sized_for(lambda size: self._load(name, size), self.model_size)

    def _load(self, name: str, size: int | None) -> ImageData:
        key = (name, size)
        if key not in self._cache:
            limit = self.train_limit if name == "train" else self.test_limit
            try:
                self._cache[key] = load_dataset(self.spec, name, limit=limit, seed=self.seed, input_size=size,
                                                mode=self.mode)
            except MixedImageSizes as exc:
                self._cache[key] = exc  # decoding stopped at the first odd image; it would again
        found = self._cache[key]
        if isinstance(found, MixedImageSizes):
            raise found
        return found

    def for_model(self, meta: dict) -> DataOptions:
        """A copy that sizes images for the model `meta` (model.json) describes, unless `input_size` is set."""
        if self.input_size is not None:
            return self
        return replace(self, model_size=int(meta["input_size"][-1]))

    def with_input_size(self, input_size: int | None) -> DataOptions:
        """A copy with `input_size` set, unless it is None or one is set already."""
        if input_size is None or self.input_size is not None:
            return self
        return replace(self, input_size=int(input_size))

    def source(self) -> Path | None:
        return data_source(self.spec)

    def describe(self) -> dict:
        """What model.json and the resume checks record: the input size the images were sized for, and a
        fingerprint of the local files (none for torchvision's own download)."""
        from compress.data.fingerprint import data_fingerprint

        size = self.input_size if self.input_size is not None else self.model_size
        if "fingerprint" not in self._cache:  # shared by the copies: one walk of a large folder per run
            source = resolve_spec(self.spec)
            local = None if source.lower() in TORCHVISION_SETS else Path(source).expanduser()
            self._cache["fingerprint"] = data_fingerprint(local) if local is not None and local.exists() else None
        return {"spec": self.spec, "train_limit": self.train_limit, "test_limit": self.test_limit,
                "input_size": size, "fingerprint": self._cache["fingerprint"]}
