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


PROBE = b"\0" * 4096  # what the write check writes


class StorageFailed(Exception):
    """The storage stopped taking writes in the middle of a sweep (full, read-only): the sweep ends (exit 1)."""


def write_failure(uri: str) -> str | None:
    """Why a file cannot be written under `uri` now (`No space left on device`), or None when it can."""
    from gitune.errors import UserError

    try:
        check_writable(uri)
    except UserError as e:
        return str(e).rsplit("(", 1)[-1].rstrip(")")
    return None


def check_writable(uri: str, flag: str = "--storage") -> None:
    """Raise UserError unless a file can be created and removed under `uri`. A storage the trials cannot write
    would fail every checkpoint after Ray and MLflow started; found here, it costs one line. A real write, not
    os.access: that says yes to root whatever the permissions, and knows nothing of object stores. Nothing is
    left behind: the probe file and any folder made for it are removed again."""
    from gitune.errors import UserError

    try:
        filesystem_, path = filesystem(uri)
        if _is_local(filesystem_):
            _probe_local(Path(path))
        else:
            _probe_object_store(filesystem_, path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid (a bad URI) is a ValueError
        raise UserError(f"{flag} {uri}: not writable ({_reason(e)})") from None


def _is_local(filesystem_) -> bool:
    from pyarrow import fs

    return isinstance(filesystem_, fs.LocalFileSystem)


def _probe_local(path: Path) -> None:
    """Create `path` (with missing parents), a temp file in it, then remove them all: only empty folders this
    probe made are removed (rmdir), so a folder another process filled meanwhile stays."""
    import errno
    import os
    import tempfile

    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
    made = [p for p in (path, *path.parents) if not p.exists()]  # deepest first
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".gitune-write-check-", dir=path)
        try:
            os.write(fd, PROBE)  # some data: a full disk still lets an empty file be made
            os.fsync(fd)
        finally:
            os.close(fd)
            os.remove(probe)
    finally:
        for folder in made:
            try:
                folder.rmdir()
            except OSError:
                break


def _probe_object_store(filesystem_, path: str) -> None:
    """Object stores (s3://, gs://) have no folders to make: write one uniquely named small object, delete it."""
    import uuid

    probe = f"{path.rstrip('/')}/.gitune-write-check-{uuid.uuid4().hex}"
    with filesystem_.open_output_stream(probe) as out:
        out.write(PROBE)
    filesystem_.delete_file(probe)


def _reason(e: Exception) -> str:
    """The OS's word for an errno (`Permission denied`), else the first line of the message."""
    import os

    if isinstance(e, OSError) and e.errno:
        return os.strerror(e.errno)
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:200]


def make_new_dir(uri: str) -> bool:
    """Create the folder `uri`; False when it already exists. Exclusive on a local disk (mkdir), so two processes
    never both get it; object stores have no such test (callers pick random names there)."""
    import os

    filesystem_, path = filesystem(uri)
    if not _is_local(filesystem_):
        filesystem_.create_dir(path, recursive=True)
        return True
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.mkdir(path)
    except FileExistsError:
        return False
    return True


def temp_name(path: str) -> str:
    """A hidden name beside `path` that no other writer uses: concurrent writers never share a partial file."""
    import uuid

    folder, name = path.rsplit("/", 1)
    return f"{folder}/.{name}.{uuid.uuid4().hex[:12]}.partial"


def write_bytes(uri: str, data: bytes) -> None:
    """Write `uri` whole or not at all: a unique temporary name, then a move over the old file."""
    filesystem_, path = filesystem(uri)
    filesystem_.create_dir(path.rsplit("/", 1)[0], recursive=True)
    tmp = temp_name(path)
    with filesystem_.open_output_stream(tmp) as out:
        out.write(data)
    filesystem_.move(tmp, path)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode())


def read_text(uri: str) -> str | None:
    """The text of the file `uri`, or None when there is none."""
    from pyarrow import fs

    filesystem_, path = filesystem(uri)
    if filesystem_.get_file_info(path).type != fs.FileType.File:
        return None
    with filesystem_.open_input_stream(path) as src:
        return src.read().decode()


def publish_new(filesystem_, tmp: str, path: str) -> bool:
    """Move the finished file `tmp` to `path` unless a file is there already (then `tmp` is removed and False
    returned): the first of two concurrent writers wins and the file never changes under a reader. Atomic on a
    local disk (a hard link fails on an existing name); on object stores a check then a move."""
    import os

    from pyarrow import fs

    if _is_local(filesystem_):
        try:
            os.link(tmp, path)
        except FileExistsError:
            os.remove(tmp)
            return False
        except OSError:  # a file system without hard links
            if os.path.exists(path):
                os.remove(tmp)
                return False
            os.replace(tmp, path)
            return True
        os.remove(tmp)
        return True
    if filesystem_.get_file_info(path).type == fs.FileType.File:
        filesystem_.delete_file(tmp)
        return False
    filesystem_.move(tmp, path)
    return True
