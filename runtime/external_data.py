"""External tensor data of an ONNX file, bounded before anything reads it (onnx, ONNX Runtime, OpenVINO).

onnx checks each external tensor against the size of its file, not their total: a stranger's model of
1,000 initializers that all name one 1 GB file, with no length, reads it a thousand times. Every external
tensor is listed here first; their total must fit in the files they name (each byte read once) and in
memory, and each file must be a regular file in the model's folder.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

import onnx
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from compress.runtime.errors import InputFileError
from compress.runtime.input_files import MAX_ONNX_BYTES, check_regular_file, size_text
from compress.runtime.memory import available_memory


def check_external_data(model: onnx.ModelProto, source: Path) -> list[onnx.TensorProto]:
    """The external tensors of `model` (parsed from the file `source`, without its external data), once
    their total is bounded: InputFileError otherwise."""
    tensors = [t for t in all_tensors(model) if uses_external_data(t)]
    claimed, files = 0, {}
    for tensor in tensors:
        try:
            info = ExternalDataInfo(tensor)
        except ValueError as exc:  # onnx's own check of the fields (a negative length): named with the file
            raise InputFileError(f"{source}: {exc}") from None
        path = _data_file(Path(source).parent, info.location, tensor.name, source)
        if path not in files:
            files[path] = check_regular_file(path, f"external data of {source}")
        offset = int(info.offset or 0)
        length = int(info.length) if info.length is not None else None
        if offset < 0 or (length is not None and length < 0):
            # onnx refuses these itself (since 1.17); a negative length would lower the total bounded below
            raise InputFileError(f"{source}: tensor {tensor.name!r} names external data at offset {offset}, length "
                                 f"{length}; neither may be negative")
        if offset + (length or 0) > files[path]:
            raise InputFileError(f"{source}: tensor {tensor.name!r} reads bytes {offset} to {offset + (length or 0)} "
                                 f"of {info.location!r}, which holds {files[path]}")
        claimed += length if length is not None else files[path] - offset
    held = sum(files.values())
    if claimed > held:
        raise InputFileError(f"{source}: its {len(tensors)} external tensors claim {size_text(claimed)} of files "
                             f"that hold {size_text(held)} (tensors that share bytes); refusing to read them")
    memory = available_memory()
    if claimed > memory:
        raise InputFileError(f"{source}: its external tensors hold {size_text(claimed)}, more than the "
                             f"{size_text(memory)} of memory available")
    return tensors


def _data_file(base_dir: Path, location: str, tensor: str, source: Path) -> Path:
    """The file `location` names, which must lie in the model's folder (onnx checks this again)."""
    parts = PurePosixPath(location.replace("\\", "/")).parts
    if not location or PureWindowsPath(location).is_absolute() or location.startswith("/") or ".." in parts:
        raise InputFileError(f"{source}: tensor {tensor!r} names external data {location!r} outside the "
                             "model's folder")
    path = base_dir / Path(*parts)
    if not os.path.realpath(path).startswith(os.path.realpath(base_dir) + os.sep):
        raise InputFileError(f"{source}: tensor {tensor!r} names external data {location!r}, which leads "
                             "outside the model's folder")
    return path


def all_tensors(model: onnx.ModelProto):
    """Every TensorProto of the model: initializers, sparse ones, and node attributes in every subgraph
    and function."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto):
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        sparse = list(attribute.sparse_tensors) + ([attribute.sparse_tensor] if attribute.HasField("sparse_tensor")
                                                   else [])
        for s in sparse:
            yield s.values
            yield s.indices
        if attribute.HasField("g"):
            yield from _graph_tensors(attribute.g)
        for graph in attribute.graphs:
            yield from _graph_tensors(graph)


def load_graph(path: str | os.PathLike) -> onnx.ModelProto:
    """The graph of `path`, bounded in size, without its external tensor data: for readers of its metadata
    or shapes, where a stranger's file may name external data of any size beside it. FileNotFoundError,
    InputFileError or ValueError (a file that does not parse) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    check_regular_file(path, "ONNX file", MAX_ONNX_BYTES)
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a corrupt file
        raise ValueError(f"{path} is not a readable ONNX file (corrupt or truncated?): "
                         f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__}") from None


def check_onnx_file(path: str | os.PathLike) -> onnx.ModelProto | None:
    """A regular ONNX file within MAX_ONNX_BYTES whose external data is bounded, before a backend (ONNX
    Runtime, OpenVINO) reads it on its own. Returns the graph it parsed (without external data), for a
    caller that reads it too; None for a file that does not parse, which is left to the backend to name."""
    path = Path(path)
    check_regular_file(path, "ONNX file", MAX_ONNX_BYTES)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - protobuf raises several types; the backend's own message is clearer
        return None
    check_external_data(model, path)
    return model
