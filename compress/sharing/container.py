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
    _, version, _flags, header_len = _PREFIX.unpack_from(body)
    if version != VERSION:
        raise ContainerError(f"{name} has format version {version}; this toolkit reads version {VERSION}")
    try:
        header = json.loads(bytes(body[_PREFIX.size:_PREFIX.size + header_len]))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ContainerError(f"{name} has an unreadable header") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ContainerError(f"{name} has an unknown header format")
    return header, memoryview(body)[_PREFIX.size + header_len:]


def decode_container(blob: bytes, name: str = "file") -> tuple[dict, list[SharedTensor], dict]:
    """(model_json, shared tensors, raw tensors) from file bytes; ContainerError when damaged."""
    from safetensors.torch import load as load_safetensors

    header, payload = _checked_body(blob, name)

    def part(ref) -> bytes:
        off, length = ref
        if off < 0 or length < 0 or off + length > len(payload):
            raise ContainerError(f"{name} points outside its payload")
        return bytes(payload[off:off + length])

    def stream(h) -> HuffmanStream:
        return HuffmanStream(part(h["bits"]), int(h["nbits"]), int(h["count"]),
                             np.frombuffer(part(h["lengths"]), np.uint8),
                             np.frombuffer(part(h["chunks"]), "<u4"))

    try:
        if header.get("chunk") != CHUNK:
            raise ContainerError(f"{name} uses chunks of {header.get('chunk')} symbols; expected {CHUNK}")
        entries = header["shared"]
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
    except ContainerError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ContainerError(f"{name} is inconsistent: {exc}") from None
    return header["model"], shared, raw


def _rebuild(entry: dict, codebook_bytes: bytes, symbols: np.ndarray, offsets: np.ndarray | None) -> SharedTensor:
    from compress.sharing.sparse import decode_positions

    shape = tuple(int(s) for s in entry["shape"])
    numel = int(np.prod(shape, dtype=np.int64))
    codebook = np.frombuffer(codebook_bytes, "<f4").astype(np.float32)
    k = int(entry["k"])
    if codebook.size != k:
        raise ValueError(f"{entry['name']}: codebook has {codebook.size} entries, header says {k}")
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


def read_container(path: str | Path) -> tuple[dict, list[SharedTensor], dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"compressed model not found: {path}")
    return decode_container(path.read_bytes(), str(path))
