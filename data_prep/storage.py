"""Paths that may be local folders or cloud URLs (gs://), and writes that land whole or not at all.

Workdirs and data dirs go through `as_path`, which gives an `etils.epath.Path`: the path type
orbax itself uses, which keeps a URL a URL (its gs:// backend is gcsfs when TensorFlow is absent).
`pathlib.Path("gs://b/run").absolute()` would instead make a local folder named `gs:`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from etils import epath

PathLike = str | os.PathLike


def is_url(path: PathLike) -> bool:
    """Whether `path` names cloud storage (scheme://...) rather than a local file."""
    return "://" in os.fspath(path)


def as_path(path: PathLike) -> epath.Path:
    """An epath.Path: URLs unchanged, local paths with ~ expanded and made absolute."""
    text = os.fspath(path)
    if is_url(text):
        return epath.Path(text)
    return epath.Path(os.path.abspath(os.path.expanduser(text)))


def write_bytes(path: PathLike, data: bytes) -> epath.Path:
    """Write a file whole: locally a temporary file then a rename; on cloud storage one object
    upload, which is atomic there (readers see the old object or the new one, never a part)."""
    path = as_path(path)
    if is_url(path):
        path.write_bytes(data)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def write_text(path: PathLike, text: str) -> epath.Path:
    """`write_bytes` for UTF-8 text."""
    return write_bytes(path, text.encode("utf-8"))


def copy_tree(source: PathLike, target: PathLike, last: Iterable[str] = ()) -> int:
    """Copy the files under `source` to `target` (each local or a URL), keeping the layout;
    returns how many were copied. A file already at the target with the same size is skipped,
    so a second copy resumes the first. Files named in `last` go after all others, so that a
    reader which takes their presence as "complete" never sees a partial copy."""
    source, target = as_path(source), as_path(target)
    last = set(last)
    copied = 0
    for path in sorted(_files(source), key=lambda p: (p.name in last, str(p))):
        destination = target / path.relative_to(source).as_posix()
        if destination.exists() and destination.stat().length == path.stat().length:
            continue
        write_bytes(destination, path.read_bytes())
        copied += 1
    return copied


def _files(folder: epath.Path):
    """Every file under `folder`, at any depth (epath has no recursive glob)."""
    for path in folder.iterdir():
        if path.is_dir():
            yield from _files(path)
        else:
            yield path
