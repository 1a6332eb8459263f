"""The project's one reader for JSON that someone else may have written: bounded and strict.

Used for engine sidecars, model.json, reports and ONNX metadata here, and by the other rooms for
plan.json and model.json. Before parsing, the file must be a regular file under a size bound and the
text must nest no deeper than a depth bound (Python's parser recurses: a file nested 100,000 levels
deep would otherwise end in RecursionError). While parsing, a key given twice is refused (json keeps
the last one silently, so a hand-edited file could say two things and mean one), and after it NaN,
Infinity and numbers too large for a float are refused by where they sit, since JSON has no such values.
Every problem is one `InputFileError` line naming the file.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

from compress.runtime.errors import InputFileError
from compress.runtime.input_files import read_regular_file, size_text

# The files read this way (model.json with per-layer widths, plans with kept indices, reports) are
# a few MB at most; callers with larger legitimate files pass their own bound.
DEFAULT_MAX_BYTES = 64 * 1024**2
# Our files nest 6 levels at most (report → variant → latency row → stats); 64 leaves room for any
# constructor arguments a user stores.
DEFAULT_MAX_DEPTH = 64

# A string may run unterminated to the end of the text (the text is then invalid JSON, which the parser
# says): without that alternative a failed match is retried at every later quote, and text made of
# escaped quotes takes quadratic time (64 KB: 20 s) before any bound is checked.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


def unique_keys(pairs):
    """json `object_pairs_hook` that refuses an object naming a key twice."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice")
        out[key] = value
    return out


def nesting_depth(text: str, limit: int | None = None) -> int:
    """How deep [ and { nest in `text`, brackets inside strings not counted; stops early past `limit`."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        depth += 1 if match.group() in "[{" else -1
        if depth > deepest:
            deepest = depth
            if limit is not None and deepest > limit:
                break
    return deepest


def _child(where: str, key) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else str(key)


def _non_finite(value: Any, where: str = "") -> tuple[str, float] | None:
    """(location, value) of the first NaN or infinity in a parsed document (its depth is bounded)."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "the document", value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, _child(where, key))
        if found is not None:
            return found
    return None


class _FiniteWatch:
    """parse_constant / parse_float hooks noting a NaN, an infinity or an overflowing float, so that the
    (slow) search for where it sits runs only for documents that hold one."""

    def __init__(self):
        self.seen = False

    def constant(self, name: str) -> float:
        self.seen = True
        return float(name)

    def number(self, text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            self.seen = True
        return value


def parse_json(data: bytes | bytearray | str, what: str, *, max_bytes: int = DEFAULT_MAX_BYTES,
               max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse JSON text (UTF-8 bytes or str) that `what` names in messages, with the bounds above."""
    if len(data) > max_bytes:
        raise InputFileError(f"{what} is {size_text(len(data))} of JSON, above the bound of {size_text(max_bytes)}")
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputFileError(f"{what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                                 "JSON files must be UTF-8") from None
    if data.startswith("\ufeff"):
        data = data[1:]  # a byte-order mark some editors write is not part of the document
    depth = nesting_depth(data, max_depth)
    if depth > max_depth:
        raise InputFileError(f"{what} nests JSON deeper than {max_depth} levels; refusing to parse it")
    watch = _FiniteWatch()
    try:
        value = json.loads(data, object_pairs_hook=unique_keys, parse_constant=watch.constant,
                           parse_float=watch.number)
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{what} is not valid JSON: {exc}") from None
    except ValueError as exc:  # unique_keys
        raise InputFileError(f"{what}: {exc}") from None
    except RecursionError:  # not reached within the depth bound; kept so no bound change can bring it back
        raise InputFileError(f"{what} nests JSON too deeply to parse") from None
    found = _non_finite(value) if watch.seen else None
    if found is not None:
        kind = "NaN" if math.isnan(found[1]) else "Infinity"
        raise InputFileError(f"{what}: {found[0]} is {found[1]!r}; {kind} is not a JSON number (only finite numbers)")
    return value


def read_json(path: str | os.PathLike, what: str | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES,
              max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """The JSON document in `path`: a regular file of at most `max_bytes`, strict JSON nested at most
    `max_depth` deep. Raises InputFileError (a ValueError) in one line naming the file and the problem."""
    data = read_regular_file(path, what or "JSON file", max_bytes)
    return parse_json(data, f"{what} {path}" if what else str(path), max_bytes=max_bytes, max_depth=max_depth)
