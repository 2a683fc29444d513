"""Where the pipeline's files live: a local folder or any fsspec URL (`s3://bucket/prefix`,
`gs://…`, `memory://name` for tests).

Everything a run shares between machines (the avatar store, the outputs, the run lock, the MLflow
artifacts) is addressed through a `DataLocation`, so workers on other machines need no shared disk.
Writes are atomic on both kinds: a local file is written beside its target and renamed into
place; on an object store a single put is atomic already.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any, Iterator

LOCAL_HOME_VARIABLE = "AVATARFLOW_HOME"
"""Environment variable naming the local folder for state that stays on one machine (the Prefect
server's home, sample manifests) when the data dir is a URL; default `~/.avatarflow`."""

# fs.info keys that change whenever an object's content does, best first.
_VERSION_KEYS = ("ETag", "etag", "md5Hash", "generation", "mtime", "LastModified", "last_modified", "updated",
                 "created")


def is_url(value: str | os.PathLike) -> bool:
    """True for an fsspec URL other than `file://` (which names a local path)."""
    text = os.fspath(value)
    return "://" in text and not text.startswith("file://")


@dataclass(frozen=True, init=False)
class DataLocation:
    """One file or folder, local or behind an fsspec URL. `url` is an absolute local path (no
    `file://`) or the URL without a trailing slash; it travels as a plain string."""

    url: str

    def __init__(self, where: str | os.PathLike | "DataLocation"):
        text = where.url if isinstance(where, DataLocation) else os.fspath(where)
        if not text:
            raise ValueError("a data location needs a path or URL, got an empty string")
        if is_url(text):
            protocol, _, rest = text.partition("://")
            text = f"{protocol}://{rest.rstrip('/')}"
        else:
            text = str(Path(text.removeprefix("file://")).expanduser().resolve())
        object.__setattr__(self, "url", text)

    def __str__(self) -> str:
        return self.url

    @property
    def is_local(self) -> bool:
        return not is_url(self.url)

    @property
    def local_path(self) -> Path:
        """The local path; ValueError for a URL."""
        if not self.is_local:
            raise ValueError(f"{self.url} is not a local path")
        return Path(self.url)

    @property
    def name(self) -> str:
        return PurePosixPath(self.url.partition("://")[2] if not self.is_local else self.url).name

    def join(self, *parts: str) -> "DataLocation":
        """A location below this one; each part is a relative name like "outputs" or "a/b.txt".
        `.` and empty segments are dropped (an object store would keep them as literal names)."""
        segments = []
        for part in parts:
            names = str(part).split("/")
            if str(part).startswith("/") or ".." in names:
                raise ValueError(f"{part!r} is not a relative name below {self.url}")
            segments += [name for name in names if name not in ("", ".")]
        return DataLocation("/".join([self.url.rstrip("/"), *segments]))

    @property
    def parent(self) -> "DataLocation":
        """The folder holding this location; ValueError for a URL with no folder above it."""
        if self.is_local:
            return DataLocation(self.local_path.parent)
        protocol, _, rest = self.url.partition("://")
        folder = rest.rpartition("/")[0]
        if not folder:
            raise ValueError(f"{self.url} has no folder above it")
        return DataLocation(f"{protocol}://{folder}")

    def __truediv__(self, part: str) -> "DataLocation":
        return self.join(part)

    def is_within(self, root: "DataLocation") -> bool:
        """True when this location is `root` or lies below it. URLs compare by name, so one with
        `.` or `..` segments (which an object store keeps literally) is never within a root."""
        if not self.is_local and {".", ".."} & set(self.url.partition("://")[2].split("/")):
            return False
        return self.url == root.url or self.url.startswith(root.url.rstrip("/") + "/")

    # -- the filesystem behind it -------------------------------------------------------------

    @property
    def fs(self):
        """The fsspec filesystem (fsspec caches one instance per protocol and options)."""
        return self._fs_and_path()[0]

    @property
    def fs_path(self) -> str:
        """This location's path as `fs` names it (no protocol)."""
        return self._fs_and_path()[1]

    def _fs_and_path(self):
        import fsspec

        if self.is_local:
            return fsspec.filesystem("file"), self.url
        try:
            return fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as error:  # an unknown protocol, or e.g. s3fs missing for s3://
            raise ValueError(f"cannot open {self.url}: {error}") from None

    def ensure_folder(self) -> "DataLocation":
        """Create this folder when local. For a URL, check that its filesystem opens (a known
        protocol whose package is installed); object stores need no folders."""
        if self.is_local:
            self.local_path.mkdir(parents=True, exist_ok=True)
        else:
            self._fs_and_path()
        return self

    def exists(self) -> bool:
        return self.fs.exists(self.fs_path)

    def info(self) -> dict[str, Any]:
        """fsspec's info: size, type and the backend's own keys (ETag, mtime, …)."""
        return self.fs.info(self.fs_path)

    def signature(self) -> tuple[int | None, str | None]:
        """(size, version): the version is the ETag or modification time, whichever the backend
        gives, so a changed file gets a new signature."""
        info = self.info()
        version = next((info[key] for key in _VERSION_KEYS if info.get(key) is not None), None)
        if isinstance(version, datetime):
            version = version.isoformat()
        return info.get("size"), None if version is None else str(version)

    def modified_at(self) -> float | None:
        """Modification time in seconds since the epoch, where the backend tells it."""
        info = self.info()
        for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
            value = info.get(key)
            if isinstance(value, datetime):
                return value.timestamp()
            if isinstance(value, (int, float)):
                return float(value)
        return None

    # -- reading ------------------------------------------------------------------------------

    def open(self, mode: str = "r", **kwargs) -> IO:
        """Like `Path.open`: text mode by default. Prefer the write helpers below for writing,
        which are atomic."""
        if "b" not in mode:
            kwargs.setdefault("encoding", "utf-8")
        return self.fs.open(self.fs_path, mode, **kwargs)

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.fs_path)

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def get_file(self, target: str | os.PathLike) -> Path:
        """Copy this file to a local path."""
        target = Path(target)
        if self.is_local:
            shutil.copyfile(self.local_path, target)
        else:
            self.fs.get_file(self.fs_path, str(target))
        return target

    @contextlib.contextmanager
    def local_copy(self) -> Iterator[Path]:
        """A local path holding this file's content: the file itself when local, otherwise a
        download into a temporary folder that is removed afterwards."""
        if self.is_local:
            yield self.local_path
            return
        with tempfile.TemporaryDirectory(prefix="avatarflow-input-") as folder:
            yield self.get_file(Path(folder) / (self.name or "file"))

    # -- writing ------------------------------------------------------------------------------

    def write_bytes(self, data: bytes) -> "DataLocation":
        if self.is_local:
            with _local_partial(self.local_path) as partial:
                partial.write_bytes(data)
        else:
            self.fs.pipe_file(self.fs_path, data)
        return self

    def write_text(self, text: str) -> "DataLocation":
        return self.write_bytes(text.encode("utf-8"))

    def put_file(self, source: str | os.PathLike) -> "DataLocation":
        """Copy a local file here, so that a reader never sees half of it."""
        if self.is_local:
            with _local_partial(self.local_path) as partial:
                shutil.copyfile(source, partial)
        else:
            self.fs.put_file(os.fspath(source), self.fs_path)
        return self

    def create_exclusive(self, data: bytes) -> "DataLocation":
        """Write a new file; FileExistsError when one is there already, even if another machine
        writes it at the same moment (O_EXCL locally, a conditional put on an object store)."""
        if self.is_local:
            self.local_path.parent.mkdir(parents=True, exist_ok=True)
        self.fs.pipe_file(self.fs_path, data, mode="create")
        return self

    def remove(self) -> bool:
        """Delete this file; False when it was not there."""
        try:
            self.fs.rm_file(self.fs_path)
        except FileNotFoundError:
            return False
        return True


@contextlib.contextmanager
def _local_partial(target: Path) -> Iterator[Path]:
    """Yield `<target>.partial` to write, then rename it over `target` (atomic on one filesystem)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        yield partial
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def local_state_dir(data_dir: str | os.PathLike | DataLocation) -> Path:
    """The local folder for what stays on this machine (the Prefect server's home, sample
    manifests): the data dir itself when it is local, else $AVATARFLOW_HOME or ~/.avatarflow."""
    location = DataLocation(data_dir)
    if location.is_local:
        return location.local_path
    return Path(os.environ.get(LOCAL_HOME_VARIABLE) or Path.home() / ".avatarflow").expanduser().resolve()


def allowed_input_roots(data_dir: str | os.PathLike, input_roots) -> tuple[str, ...]:
    """The input roots a run trusts: the given ones, plus the data dir when it is a URL (inputs
    uploaded beside the shared data are trusted like the data itself)."""
    roots = tuple(input_roots or ())
    location = DataLocation(data_dir)
    return roots if location.is_local else roots + (location.url,)
