"""The .dcz file: a weight-shared model in one checksummed container.

Layout (little-endian):

    offset 0   magic  b"DCZ\\x89"                      4 bytes
    offset 4   format version (uint16), flags (uint16)  4 bytes
    offset 8   header length H (uint32)                 4 bytes
    offset 12  header: UTF-8 JSON, H bytes
    ...        payload: blobs the header points into as [offset, length] relative to the payload
    last 32    sha256 of every byte before it

The header holds the model's model.json, the list of shared tensors (shape, bits, codebook blob,
pruning offsets width) with their Huffman streams (code lengths blob, chunk offsets blob, bit blob,
bit and symbol counts), and the blob of the remaining tensors (BN parameters and statistics, biases)
stored raw at their own dtype (float32) as one safetensors buffer. The checksum is verified before
anything else is parsed, so a flipped or missing byte is reported as such.

A reader trusts no count in the header: the header is bounded by MAX_JSON_BYTES and the tensors by
MAX_LAYERS, the blobs may not overlap (the writer lays them side by side, so every per-blob cost is
bounded by the file's size), and the weights of all tensors together, the decode tables and the bit
streams are checked against the memory available before they are allocated.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compress.errors import CompressError
from compress.sharing.huffman import CHUNK, HuffmanStream, decode_streams, encode_auto

MAGIC = b"DCZ\x89"
VERSION = 1
FORMAT = "compress.dcz/1"
_PREFIX = struct.Struct("<4sHHI")
_DIGEST = 32


class ContainerError(CompressError, ValueError):
    """A .dcz file that is not one, is damaged, or comes from an unknown version."""


class ContainerNotFoundError(ContainerError, FileNotFoundError):
    """The .dcz file does not exist."""


@dataclass
class SharedTensor:
    """One weight tensor after sharing: `index[i]` picks a codebook entry, -1 marks a pruned weight."""

    name: str
    shape: tuple[int, ...]
    codebook: np.ndarray              # float32 [k]
    index: np.ndarray                 # int64 [numel]
    bits: int
    offset_bits: int | None = None    # set when the tensor is stored sparse (pruned)
    stats: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.codebook.size)

    def values(self) -> np.ndarray:
        """The dense float32 weights this tensor stands for."""
        out = np.zeros(self.index.size, dtype=np.float32)
        keep = self.index >= 0
        out[keep] = self.codebook[self.index[keep]]
        return out.reshape(self.shape)


def _symbols(t: SharedTensor) -> tuple[np.ndarray, np.ndarray | None]:
    """(index symbols, offset symbols or None). Sparse tensors use symbol k for filler zeros."""
    from compress.sharing.sparse import encode_positions

    if t.offset_bits is None:
        if (t.index < 0).any():
            raise ValueError(f"{t.name}: pruned weights need offset bits (sparse storage)")
        return t.index, None
    positions = np.flatnonzero(t.index >= 0)
    offsets, filler = encode_positions(positions, t.offset_bits)
    symbols = np.full(offsets.size, t.k, dtype=np.int64)
    symbols[~filler] = t.index[positions]
    return symbols, offsets.astype(np.int64)


class _Payload:
    def __init__(self):
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, blob: bytes) -> list[int]:
        ref = [self.size, len(blob)]
        self.parts.append(blob)
        self.size += len(blob)
        return ref


def _stream_header(payload: _Payload, st: HuffmanStream) -> dict:
    return {"count": st.count, "nbits": st.nbits, "lengths": payload.add(np.asarray(st.lengths, np.uint8).tobytes()),
            "chunks": payload.add(np.asarray(st.chunk_starts, "<u4").tobytes()), "bits": payload.add(st.data)}


def encode_container(model_json: dict, shared: list[SharedTensor], raw: dict) -> tuple[bytes, dict]:
    """Serialize; returns the file bytes and a per-part size breakdown in bytes."""
    from safetensors.torch import save as save_safetensors

    payload = _Payload()
    entries = []
    sizes = {"index_bits": 0, "offset_bits": 0, "codebooks": 0, "code_tables_and_chunk_index": 0, "raw_tensors": 0}
    for t in shared:
        symbols, offsets = _symbols(t)
        idx_stream = encode_auto(symbols, t.k + (1 if offsets is not None else 0))
        entry = {"name": t.name, "shape": list(t.shape), "bits": t.bits, "k": t.k, "offset_bits": t.offset_bits,
                 "codebook": payload.add(np.asarray(t.codebook, "<f4").tobytes()),
                 "index": _stream_header(payload, idx_stream)}
        sizes["index_bits"] += len(idx_stream.data)
        sizes["codebooks"] += 4 * t.k
        sizes["code_tables_and_chunk_index"] += idx_stream.lengths.size + 4 * idx_stream.chunk_starts.size
        if offsets is not None:
            off_stream = encode_auto(offsets, 1 << t.offset_bits)
            entry["offsets"] = _stream_header(payload, off_stream)
            sizes["offset_bits"] += len(off_stream.data)
            sizes["code_tables_and_chunk_index"] += off_stream.lengths.size + 4 * off_stream.chunk_starts.size
        entries.append(entry)
    raw_blob = save_safetensors({k: v.detach().cpu().contiguous() for k, v in raw.items()}) if raw else b""
    sizes["raw_tensors"] = len(raw_blob)
    header = {"format": FORMAT, "chunk": CHUNK, "model": model_json, "shared": entries,
              "raw": payload.add(raw_blob)}
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    body = _PREFIX.pack(MAGIC, VERSION, 0, len(header_bytes)) + header_bytes + b"".join(payload.parts)
    sizes["header"] = _PREFIX.size + len(header_bytes) + _DIGEST
    return body + hashlib.sha256(body).digest(), sizes


def _checked_body(blob: bytes, name: str) -> tuple[dict, memoryview]:
    if blob[:4] != MAGIC[:len(blob)] or (len(blob) >= 4 and blob[:4] != MAGIC):
        raise ContainerError(f"{name} is not a .dcz weight-sharing file (bad magic)")
    if len(blob) < _PREFIX.size + _DIGEST:
        raise ContainerError(f"{name} is truncated ({len(blob)} bytes)")
    body, digest = blob[:-_DIGEST], blob[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise ContainerError(f"{name} is corrupt or truncated: sha256 checksum mismatch")
    _, version, flags, header_len = _PREFIX.unpack_from(body)
    if version != VERSION:
        raise ContainerError(f"{name} has format version {version}; this toolkit reads version {VERSION}")
    if flags != 0:
        raise ContainerError(f"{name} sets unknown flags {flags:#06x}")
    if header_len > len(body) - _PREFIX.size:
        raise ContainerError(f"{name} declares a {header_len}-byte header in a {len(body)}-byte file")
    from compress.limits import MAX_JSON_BYTES, MAX_JSON_DEPTH
    if header_len > MAX_JSON_BYTES:
        raise ContainerError(f"{name} has a {header_len:,}-byte header, over the bound of {MAX_JSON_BYTES:,} "
                             "(MAX_JSON_BYTES)")
    from compress.runtime.errors import InputFileError
    from compress.runtime.strict_json import parse_json

    try:
        header = parse_json(bytes(body[_PREFIX.size:_PREFIX.size + header_len]), f"{name}'s header",
                            max_bytes=header_len, max_depth=MAX_JSON_DEPTH)
    except InputFileError as exc:
        raise ContainerError(f"{exc} (MAX_JSON_DEPTH)" if "deeper than" in str(exc) else str(exc)) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ContainerError(f"{name} has an unknown header format")
    return header, memoryview(body)[_PREFIX.size + header_len:]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _Header:
    """Type and range checks of the header's fields, each failure one ContainerError naming the field."""

    def __init__(self, name: str, payload_size: int):
        self.name, self.payload_size = name, payload_size
        self.refs: list[tuple[int, int, str]] = []

    def fail(self, field: str, problem: str):
        raise ContainerError(f"{self.name}: {field} {problem}")

    def int(self, value, field: str, lo: int = 0, hi: int | None = None) -> int:
        if not _is_int(value):
            self.fail(field, f"must be an integer, got {value!r:.60}")
        if value < lo or (hi is not None and value > hi):
            self.fail(field, f"must lie in [{lo}, {hi if hi is not None else '∞'}], got {value}")
        return value

    def ref(self, value, field: str) -> tuple[int, int]:
        if not isinstance(value, list) or len(value) != 2:
            self.fail(field, f"must be an [offset, length] pair, got {value!r:.60}")
        off, length = (self.int(v, field) for v in value)
        if off + length > self.payload_size:
            self.fail(field, "points outside the payload")
        if length:
            self.refs.append((off, length, field))
        return off, length

    def disjoint(self) -> None:
        """No two pieces share payload bytes, as the writer lays them out: a stranger's header that points
        many streams at one large blob would make the decoder copy and widen it once per stream."""
        last_end, last_piece = 0, None
        for off, length, piece in sorted(self.refs):
            if off < last_end:
                self.fail(piece, f"overlaps {last_piece} in the payload")
            last_end, last_piece = off + length, piece

    def dict(self, value, field: str) -> dict:
        if not isinstance(value, dict):
            self.fail(field, f"must be an object, got {type(value).__name__}")
        return value

    def stream(self, value, field: str, alphabet: int) -> dict:
        value = self.dict(value, field)
        for key in ("count", "nbits", "lengths", "chunks", "bits"):
            if key not in value:
                self.fail(field, f"lacks {key}")
        self.int(value["count"], f"{field}.count")
        self.int(value["nbits"], f"{field}.nbits", 0, 8 * self.payload_size)
        _, n_lengths = self.ref(value["lengths"], f"{field}.lengths")
        if n_lengths != alphabet:
            self.fail(f"{field}.lengths", f"has {n_lengths} code lengths for an alphabet of {alphabet} symbols")
        _, n_chunks = self.ref(value["chunks"], f"{field}.chunks")
        if n_chunks % 4 or n_chunks // 4 != -(-value["count"] // CHUNK):
            self.fail(f"{field}.chunks", f"has {n_chunks} bytes for {value['count']} symbols")
        self.ref(value["bits"], f"{field}.bits")
        return value


def _check_entries(header: dict, payload_size: int, name: str) -> list[dict]:
    """Every shared-tensor entry of the header, typed and bounded before anything is allocated."""
    from compress.limits import check_allocation, element_count

    h = _Header(name, payload_size)
    if header.get("chunk") != CHUNK:
        raise ContainerError(f"{name} uses chunks of {header.get('chunk')!r} symbols; expected {CHUNK}")
    h.dict(header.get("model"), "model")
    h.ref(header.get("raw"), "raw")
    entries = header.get("shared")
    if not isinstance(entries, list):
        h.fail("shared", "must be a list")
    from compress.limits import MAX_LAYERS, check_count
    check_count(len(entries), MAX_LAYERS, f"{name}: shared tensors", "MAX_LAYERS")
    seen: set[str] = set()
    symbols = weights = 0
    for i, e in enumerate(entries):
        e = h.dict(e, f"shared[{i}]")
        tname = e.get("name")
        if not isinstance(tname, str) or not tname:
            h.fail(f"shared[{i}].name", f"must be a non-empty string, got {tname!r:.60}")
        if tname in seen:
            h.fail(f"tensor {tname}", "appears twice")
        seen.add(tname)
        field = f"tensor {tname}"
        shape = e.get("shape")
        if not isinstance(shape, list) or not shape:
            h.fail(f"{field} shape", f"must be a non-empty list, got {shape!r:.60}")
        for d in shape:
            h.int(d, f"{field} shape", 1)
        numel = element_count(shape, f"{name}: {field}")
        check_allocation(numel, "int64", f"{name}: {field} (shape {shape})")
        weights += numel
        bits = h.int(e.get("bits"), f"{field} bits", 1, 16)
        k = h.int(e.get("k"), f"{field} k", 1, 1 << bits)
        offset_bits = e.get("offset_bits")
        if offset_bits is not None:
            h.int(offset_bits, f"{field} offset_bits", 1, 16)
        _, cb_len = h.ref(e.get("codebook"), f"{field} codebook")
        if cb_len != 4 * k:
            h.fail(f"{field} codebook", f"has {cb_len} bytes for k = {k} float32 entries")
        index = h.stream(e.get("index"), f"{field} index", k + (1 if offset_bits is not None else 0))
        if offset_bits is None:
            if e.get("offsets") is not None:
                h.fail(f"{field} offsets", "are present for a dense tensor")
            if index["count"] != numel:
                h.fail(f"{field} index", f"holds {index['count']} symbols for {numel} weights")
        else:
            offsets = h.stream(e.get("offsets"), f"{field} offsets", 1 << offset_bits)
            if offsets["count"] != index["count"]:
                h.fail(f"{field} offsets", f"hold {offsets['count']} entries, the index {index['count']}")
            if index["count"] > numel:
                h.fail(f"{field} index", f"holds {index['count']} entries for {numel} weights")
            symbols += offsets["count"]
        symbols += index["count"]
    h.disjoint()
    # The decoder works on whole chunks of int32 symbols, then int64 copies of them.
    check_allocation(symbols + len(entries) * CHUNK, "int64", f"{name}: the Huffman streams")
    # Every tensor is held at once: its int64 index, then the float32 weights and a mask made from it.
    check_allocation(2 * weights, "int64", f"{name}: its {weights:,} weights (index, values and mask)")
    return entries


def decode_container(blob: bytes, name: str = "file") -> tuple[dict, list[SharedTensor], dict]:
    """(model_json, shared tensors, raw tensors) from file bytes; ContainerError when damaged or implausible."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    header, payload = _checked_body(blob, name)
    entries = _check_entries(header, len(payload), name)

    def part(ref) -> bytes:
        off, length = ref
        return bytes(payload[off:off + length])

    def stream(h) -> HuffmanStream:
        return HuffmanStream(part(h["bits"]), int(h["nbits"]), int(h["count"]),
                             np.frombuffer(part(h["lengths"]), np.uint8),
                             np.frombuffer(part(h["chunks"]), "<u4"))

    try:
        streams, owners = [], []
        for i, e in enumerate(entries):
            streams.append(stream(e["index"]))
            owners.append((i, "index"))
            if e.get("offsets") is not None:
                streams.append(stream(e["offsets"]))
                owners.append((i, "offsets"))
        decoded: dict = {}
        for (i, kind), values in zip(owners, decode_streams(streams)):
            decoded[(i, kind)] = values
        shared = [_rebuild(e, part(e["codebook"]), decoded[(i, "index")], decoded.get((i, "offsets")))
                  for i, e in enumerate(entries)]
        raw_blob = part(header["raw"])
        raw = load_safetensors(raw_blob) if raw_blob else {}
    except CompressError:  # ContainerError, or a bound (TooLargeError) that names itself
        raise
    except (KeyError, TypeError, ValueError, IndexError, SafetensorError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ContainerError(f"{name} is inconsistent: {first[:200]}") from None
    except MemoryError:
        raise ContainerError(f"{name} does not fit in memory to decode") from None
    clash = sorted({t.name for t in shared} & set(raw))
    if clash:
        raise ContainerError(f"{name}: tensor {clash[0]} is stored both shared and raw")
    return header["model"], shared, raw


def _rebuild(entry: dict, codebook_bytes: bytes, symbols: np.ndarray, offsets: np.ndarray | None) -> SharedTensor:
    from compress.sharing.sparse import decode_positions

    shape = tuple(int(s) for s in entry["shape"])
    numel = int(np.prod(shape, dtype=np.int64))
    codebook = np.frombuffer(codebook_bytes, "<f4").astype(np.float32)
    k = int(entry["k"])
    if codebook.size != k:
        raise ValueError(f"{entry['name']}: codebook has {codebook.size} entries, header says {k}")
    if not np.isfinite(codebook).all():
        raise ValueError(f"{entry['name']}: codebook holds NaN or infinity")
    if offsets is None:
        if symbols.size != numel or (symbols >= k).any():
            raise ValueError(f"{entry['name']}: index stream does not fit the tensor")
        index = symbols
    else:
        positions = decode_positions(offsets)
        if symbols.size != offsets.size or (positions.size and positions[-1] >= numel) or (symbols > k).any():
            raise ValueError(f"{entry['name']}: sparse streams do not fit the tensor")
        index = np.full(numel, -1, dtype=np.int64)
        real = symbols < k
        index[positions[real]] = symbols[real]
    return SharedTensor(entry["name"], shape, codebook, index, int(entry["bits"]), entry.get("offset_bits"))


def write_container(path: str | Path, model_json: dict, shared: list[SharedTensor], raw: dict) -> dict:
    from compress.atomic import atomic_path

    blob, sizes = encode_container(model_json, shared, raw)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(blob)
    sizes["file"] = len(blob)
    return sizes


def read_container_bytes(path: str | Path) -> bytes:
    """The bytes of a .dcz file, read once after checking that it is a regular file that fits in memory."""
    from compress.limits import check_allocation, regular_file

    path = Path(path)
    if not path.exists():
        raise ContainerNotFoundError(f"compressed model not found: {path}")
    size = regular_file(path).st_size  # a FIFO or /dev/zero would never finish reading
    check_allocation(size, "uint8", f"{path} ({size:,} bytes)")
    return path.read_bytes()


def read_container(path: str | Path) -> tuple[dict, list[SharedTensor], dict]:
    return decode_container(read_container_bytes(path), str(path))
