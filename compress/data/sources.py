"""Where image bytes come from: an ImageFolder directory or a tar archive, listed without decoding.

A listing is a `Source`: class names, one label per image, and a picklable reader of image bytes that
DataLoader workers can use. Its `fingerprint` covers the file list, sizes and modification times, so a
cache keyed on it goes stale as soon as any image changes.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import shutil
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import torch

from compress.errors import CompressError
from compress.limits import (MAX_ARCHIVE_EXPANSION, MAX_CLASSES, MAX_IMAGE_BYTES, MIN_ARCHIVE_BOUND, check_count,
                             human_bytes)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
SPLIT_ALIASES = {"train": ("train", "training"), "test": ("test", "val", "validation")}


@dataclass
class FileReader:
    """Image bytes from files under a root folder."""

    root: str
    names: list[str]  # relative to root

    def read(self, i: int) -> bytes:
        with open(os.path.join(self.root, self.names[i]), "rb") as fh:
            return fh.read()

    def name(self, i: int) -> str:
        return os.path.join(self.root, self.names[i])

    def read_many(self, indices):
        for i in indices:
            yield i, self.read(i)


@dataclass
class TarReader:
    """Image bytes read straight from an uncompressed tar by offset (random access, one handle per process)."""

    archive: str
    names: list[str]
    offsets: list[int]
    sizes: list[int]
    label: str = ""  # how to name the source in messages (the user's archive, not a decompressed copy)
    _handles: dict = field(default_factory=dict, repr=False, compare=False)

    def read(self, i: int) -> bytes:
        pid = os.getpid()
        fh = self._handles.get(pid)
        if fh is None:
            # A forked DataLoader worker must not share the parent's file position.
            self._handles.clear()
            fh = self._handles[pid] = open(self.archive, "rb")  # noqa: SIM115 - kept open for later reads
        fh.seek(self.offsets[i])
        return fh.read(self.sizes[i])

    def name(self, i: int) -> str:
        return f"{self.label or self.archive}:{self.names[i]}"

    def read_many(self, indices):
        # Archive order keeps reads sequential.
        for i in sorted(indices, key=lambda i: self.offsets[i]):
            yield i, self.read(i)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state


class _BoundedStream:
    """A decompressing stream that refuses to go past `limit` bytes: a small archive of zeros can
    decompress to terabytes (a decompression bomb), which listing or copying it would otherwise follow."""

    def __init__(self, raw, path: str, limit: int):
        self.raw, self.path, self.limit = raw, path, limit

    def _check(self) -> None:
        if self.raw.tell() > self.limit:
            self._refuse()

    def _refuse(self) -> None:
        raise CompressError(f"archive {self.path} decompresses to more than {human_bytes(self.limit)} "
                            f"({MAX_ARCHIVE_EXPANSION}x its size: MAX_ARCHIVE_EXPANSION); refusing to follow it")

    def read(self, n: int = -1) -> bytes:
        # tarfile asks for sizes read from member headers (a long name, a pax header): cap the request, or
        # one call would decompress gigabytes into memory before the check.
        room = max(self.limit + 1 - self.raw.tell(), 0)
        data = self.raw.read(room if n is None or n < 0 else min(n, room))
        self._check()
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset if whence == 0 else self.raw.tell() + offset if whence == 1 else None
        if target is not None and target > self.limit:
            # decompressing up to a header's claimed size takes seconds per gigabyte: refuse before it
            self._refuse()
        position = self.raw.seek(offset, whence)
        self._check()
        return position

    def tell(self) -> int:
        return self.raw.tell()

    def close(self) -> None:
        self.raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def expansion_bound(path: str | Path) -> int:
    return max(MIN_ARCHIVE_BOUND, MAX_ARCHIVE_EXPANSION * os.path.getsize(path))


def _open_decompressed(path: str) -> _BoundedStream:
    with open(path, "rb") as fh:
        head = fh.read(6)
    opener = gzip.open if head[:2] == b"\x1f\x8b" else bz2.open if head[:3] == b"BZh" else lzma.open
    return _BoundedStream(opener(path, "rb"), path, expansion_bound(path))


@dataclass
class CompressedTarReader:
    """Image bytes from a compressed tar by their offsets in the decompressed stream. Reads in offset
    order share one forward pass; tarfile's own per-member iteration would be far slower."""

    archive: str
    names: list[str]
    offsets: list[int]
    sizes: list[int]

    def name(self, i: int) -> str:
        return f"{self.archive}:{self.names[i]}"

    def read(self, i: int) -> bytes:
        return next(b for _, b in self.read_many([i]))

    def read_many(self, indices):
        with _open_decompressed(self.archive) as fh:
            for i in sorted(indices, key=lambda i: self.offsets[i]):
                fh.seek(self.offsets[i])
                yield i, fh.read(self.sizes[i])


@dataclass
class Source:
    """One split of a folder or archive, listed: what to read, which label, which classes."""

    path: Path
    split: str
    classes: list[str]
    labels: torch.Tensor
    reader: object
    fingerprint: str = ""

    def __len__(self) -> int:
        return int(self.labels.numel())


def split_prefix(names, split: str, source: Path, present: dict[str, list[str]] | None = None) -> str:
    """The folder name `split` goes by in `names` (train or training, test, val or validation).

    `present` (top folder → the files found under it that are not in class folders, or not images) lets
    the message say what a split folder holds instead of claiming it is missing."""
    for alias in SPLIT_ALIASES[split]:
        if alias in names:
            return alias
    for alias in SPLIT_ALIASES[split]:
        if present and alias in present:
            found = present[alias]
            shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
            raise CompressError(f"{source}: {alias}/ holds no class folder with images (found {shown or 'nothing'}; "
                                f"expected {alias}/CLASS/IMAGE with images {', '.join(IMAGE_SUFFIXES)})")
    tops = set(names) | {k for k in (present or {}) if "/" not in k}  # a tar without folder entries has no layout
    raise CompressError(f"{source} has no '{split}/' folder (found: {', '.join(sorted(tops)) or 'nothing'})")


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def _check_classes(source: Path, split: str, layout: dict[str, dict[str, list]],
                   present: dict[str, list[str]] | None = None) -> list[str]:
    """Classes of `split`; every class folder has images and train and test name the same classes."""
    prefix = split_prefix(set(layout), split, source, present)
    classes = sorted(layout[prefix])
    if not classes:
        raise CompressError(f"{source}/{prefix} has no class folders")
    check_count(len(classes), MAX_CLASSES, f"{source}/{prefix}: the number of class folders", "MAX_CLASSES")
    for cls in classes:
        try:
            cls.encode("utf-8")
        except UnicodeEncodeError:
            # A class name is written into model.json and printed: it must be text.
            shown = cls.encode("utf-8", "surrogateescape")
            raise CompressError(f"class folder {source}/{prefix}/{shown!r} has a name that is not UTF-8; "
                                "rename it") from None
    for cls in classes:
        if not layout[prefix][cls]:
            found = (present or {}).get(f"{prefix}/{cls}", [])
            holds = f"it holds {', '.join(found[:3])}{' and more' if len(found) > 3 else ''}; " if found else ""
            raise CompressError(f"class folder {source}/{prefix}/{cls} has no images "
                                f"({holds}images are {', '.join(IMAGE_SUFFIXES)})")
    other_split = "test" if split == "train" else "train"
    other = next((a for a in SPLIT_ALIASES[other_split] if a in layout), None)
    if other is not None and sorted(layout[other]) != classes:
        only = lambda a, b: ", ".join(sorted(set(a) - set(b))[:3]) or "none"  # noqa: E731
        raise CompressError(
            f"{source}: class folders differ between {split} and {other_split} "
            f"({len(classes)} vs {len(layout[other])} classes; only in {prefix}/: {only(classes, layout[other])}; "
            f"only in {other}/: {only(layout[other], classes)}); labels would not line up")
    return classes


def _class_entries(folder: Path, below: str = ""):
    """(name relative to the class folder, DirEntry) of everything in it and in its folders, as torchvision's
    ImageFolder reads them: images one folder down were once left out without a word. Hidden folders are
    skipped and linked folders are not followed (a link may loop)."""
    for entry in os.scandir(folder):
        name = f"{below}{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            if not entry.name.startswith("."):
                yield from _class_entries(Path(entry.path), f"{name}/")
        else:
            yield name, entry


def _kind(entry: os.DirEntry) -> str:
    """"file", "dir" or "other" (a FIFO, a device, a broken link or a link loop), following links."""
    try:
        return "file" if entry.is_file() else "dir" if entry.is_dir() else "other"
    except OSError:  # a link loop: ELOOP
        return "other"


def list_folder(root: Path, split: str) -> Source:
    layout: dict[str, dict[str, list]] = {}
    for top in os.scandir(root):
        if top.is_dir() and not top.name.startswith("."):
            layout[top.name] = {c.name: [] for c in os.scandir(top.path)
                                if c.is_dir() and not c.name.startswith(".")}
    prefix = split_prefix(set(layout), split, root)
    present: dict[str, list[str]] = {}
    digest = hashlib.sha256()
    names, labels = [], []
    for cls in sorted(layout[prefix]):
        files, others = [], []
        for name, entry in _class_entries(root / prefix / cls):
            kind = _kind(entry)
            if is_image_name(entry.name) and kind == "file":
                st = entry.stat()
                _check_image_size(entry.path, st.st_size)  # a sparse file claims any size and reads as zeros
                files.append((name, st.st_size, st.st_mtime_ns))
            elif is_image_name(entry.name) and kind == "other":
                # A FIFO, a device or a dangling link named as an image: skipping it would train on other data
                # than the folder lists, without a word.
                raise CompressError(f"{entry.path} is named as an image but is not a regular file (a FIFO, a device, "
                                    "a broken link or a link loop); remove it or give it another name")
            elif len(others) < 4 and kind != "dir":
                others.append(name)
        files.sort()
        layout[prefix][cls] = files
        present[f"{prefix}/{cls}"] = sorted(others)
    classes = _check_classes(root, split, layout, present)
    for label, cls in enumerate(classes):
        for name, size, mtime in layout[prefix][cls]:
            names.append(f"{prefix}/{cls}/{name}")
            labels.append(label)
            digest.update(f"{prefix}/{cls}/{name}|{size}|{mtime}\n".encode("utf-8", "surrogateescape"))
    return Source(root, split, classes, torch.as_tensor(labels, dtype=torch.int64),
                  FileReader(str(root), names), digest.hexdigest())


def archive_fingerprint(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()


def is_compressed(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(6)
    return head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head == b"\xfd7zXZ\x00"


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) in (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty archive's end


def _members(path: Path, readable: Path) -> list[tarfile.TarInfo]:
    """Every member of the archive. A compressed one is read through to its end, so that its checksum
    (gzip's CRC, xz's check) is verified: a damaged stream can decode to other bytes without an error
    until then, and those would be decoded as images and cached."""
    compressed = readable == path and is_compressed(path)
    if _is_zip(readable):
        raise CompressError(f"{path} is a zip file; only folders and tar archives (.tar, .tar.gz, .tar.bz2, "
                            ".tar.xz) are read: extract it to a folder")
    try:
        if not compressed:
            with tarfile.open(readable, "r:") as tar:  # only tar: anything else is not an archive here
                return tar.getmembers()
        with _open_decompressed(str(path)) as stream, tarfile.open(fileobj=stream, mode="r:") as tar:
            members = tar.getmembers()
            while stream.read(1 << 20):
                pass
            return members
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise CompressError(f"cannot read archive {path}: {exc}") from None


def _normalized(name: str) -> str | None:
    """A member's path inside the archive, or None for one that leaves it ('..', absolute)."""
    while name.startswith("./"):
        name = name[2:]
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts:
        return None
    return "/".join(parts)


def _check_image_size(where, size: int) -> None:
    if size > MAX_IMAGE_BYTES:
        raise CompressError(f"{where} is {human_bytes(size)}, over the bound of {human_bytes(MAX_IMAGE_BYTES)} "
                            "for one image (MAX_IMAGE_BYTES)")


def _resolve_links(path: Path, members: list[tarfile.TarInfo], names: list[str | None]) -> dict[int, tarfile.TarInfo]:
    """For each hard or symbolic link: the regular member it stands for (by index). A link to nothing in
    the archive, or a member stored sparse (its size is not its bytes at its offset), is refused in one line
    where it would be read as an image. `names` are the members' normalized names."""
    regular = {name: m for m, name in zip(members, names) if name is not None and m.isreg() and not m.issparse()}
    targets = {}
    for i, (m, name) in enumerate(zip(members, names)):
        if name is None or not is_image_name(PurePosixPath(name).name):
            continue
        if m.issparse():
            raise CompressError(f"{path}: member {name} is stored sparse (tar -S), which this reader cannot place "
                                "by offset; pack the archive again without -S")
        if not (m.isreg() or m.islnk() or m.issym() or m.isdir()):
            raise CompressError(f"{path}: member {name} is named as an image but is a device or a FIFO, not a file")
        if m.islnk() or m.issym():
            link = m.linkname if m.islnk() else str(PurePosixPath(name).parent / m.linkname)
            link = _normalized(os.path.normpath(link))  # None for an absolute or escaping target
            target = regular.get(link) if link else None
            if target is None:
                raise CompressError(f"{path}: member {name} links to {m.linkname!r}, which is no image file in "
                                    "the archive")
            targets[i] = target
    return targets


def list_archive(path: Path, split: str, *, plain_copy: Path | None = None) -> Source:
    """List an archive's images. With `plain_copy` (an uncompressed copy of a compressed archive),
    images are read from the copy by offset, so workers get random access."""
    readable = plain_copy or path
    members = _members(path, readable)
    normalized = [_normalized(m.name) for m in members]
    links = _resolve_links(path, members, normalized)
    # Archives may wrap everything in one top folder; strip it when present. Only files under split/class/
    # are read, in its folders too as ImageFolder reads them (a link as the file it names, as a folder's
    # symlink is read); paths that leave the archive ('..', absolute) are ignored, and a device or FIFO named
    # as an image is refused (_resolve_links).
    # A name given twice (an archive appended to with tar -r) is refused: extraction would keep the last copy,
    # the listing would count both.
    seen: set[str] = set()
    entries = []  # (path parts inside the archive, the member whose bytes are read, a file?, a folder?)
    for i, (m, name) in enumerate(zip(members, normalized)):
        if name is None:
            continue
        target = links.get(i, m)
        is_file = m.isreg() or i in links
        if is_file and is_image_name(PurePosixPath(name).name):
            if name in seen:
                raise CompressError(f"{path}: {name} appears twice in the archive (appended with tar -r?); "
                                    "extracting it would keep only the last copy")
            seen.add(name)
            _check_image_size(f"{path}: {name}", target.size)
        entries.append((PurePosixPath(name).parts, target, is_file, m.isdir()))
    tops = {p[0] for p, *_ in entries if len(p) > 1}
    strip = 1 if len(tops) == 1 and not (tops & set(SPLIT_ALIASES["train"] + SPLIT_ALIASES["test"])) else 0
    layout: dict[str, dict[str, list]] = {}
    present: dict[str, list[str]] = {}  # every top folder, with the files that are not images in class folders
    for full, m, is_file, is_dir in entries:
        p = full[strip:]
        if not p or any(part.startswith(".") for part in p[:2]):
            continue
        if len(p) > 1 or is_dir:
            present.setdefault(p[0], [])
        if is_dir and len(p) == 2:
            layout.setdefault(p[0], {}).setdefault(p[1], [])
        elif is_file and len(p) >= 3 and is_image_name(p[-1]) and not any(part.startswith(".") for part in p[2:]):
            layout.setdefault(p[0], {}).setdefault(p[1], []).append(("/".join(full), m))  # nested as ImageFolder
        elif is_file and len(p) > 1:
            present[p[0]].append("/".join(p[1:]))
            if len(p) == 3:
                present.setdefault(f"{p[0]}/{p[1]}", []).append(p[2])
    classes = _check_classes(path, split, layout, present)
    prefix = split_prefix(set(layout), split, path)
    chosen, labels, names = [], [], []
    for label, cls in enumerate(classes):
        for name, m in sorted(layout[prefix][cls], key=lambda item: item[0]):
            chosen.append(m)
            names.append(name)
            labels.append(label)
    if plain_copy is not None or not is_compressed(path):
        reader = TarReader(str(readable), names, [m.offset_data for m in chosen], [m.size for m in chosen],
                           label=str(path))
    else:
        reader = CompressedTarReader(str(path), names, [m.offset_data for m in chosen], [m.size for m in chosen])
    return Source(path, split, classes, torch.as_tensor(labels, dtype=torch.int64), reader,
                  archive_fingerprint(path))


def decompress_to(path: Path, dest: Path) -> None:
    """Write an uncompressed copy of a .tar.gz / .tar.bz2 / .tar.xz archive to `dest` (atomically)."""
    from compress.atomic import atomic_path

    with atomic_path(dest) as tmp:
        try:
            with _open_decompressed(str(path)) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, length=1 << 22)
        except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # a write failure: the caller degrades
            raise CompressError(f"cannot read archive {path}: {exc}") from None


def open_source(path: Path, split: str) -> Source:
    if path.is_dir():
        return list_folder(path, split)
    return list_archive(path, split)
