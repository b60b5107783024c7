"""Sweep storage as pyarrow sees it: a local path, or a URI (s3://, gs://, file://), so that resume and the
generator cache work the same on a laptop and on a cluster's shared storage."""

from __future__ import annotations

from pathlib import Path


def filesystem(uri: str):
    """(pyarrow FileSystem, path inside it) for a local path or a URI."""
    from pyarrow import fs

    if "://" in uri:
        return fs.FileSystem.from_uri(uri)
    return fs.LocalFileSystem(), str(Path(uri).resolve())


def is_file(uri: str) -> bool:
    from pyarrow import fs

    filesystem_, path = filesystem(uri)
    return filesystem_.get_file_info(path).type == fs.FileType.File


def subfolders(uri: str) -> list[str]:
    """Names of the folders directly in `uri` (none when it does not exist)."""
    from pyarrow import fs

    filesystem_, path = filesystem(uri)
    infos = filesystem_.get_file_info(fs.FileSelector(path, allow_not_found=True))
    return [i.base_name for i in infos if i.type == fs.FileType.Directory]
