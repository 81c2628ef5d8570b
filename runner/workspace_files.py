"""Files of a workspace, read and written by the host (as root) on a tree the agent controls.

The sandbox is the attacker: any directory of its workspace may be a symbolic link, and may
become one between two calls. So no path is ever resolved by the kernel from the workspace
root: a client's path is checked (relative, no `..`, no NUL) and split into names, and each
directory is opened `O_DIRECTORY|O_NOFOLLOW` relative to its parent's descriptor (`openat`),
the file last with `O_NOFOLLOW`. A link anywhere on the way fails the open (ELOOP/ENOTDIR):
the operation is refused with `UnsafePath`, and nothing outside the workspace is touched.

What is written gets the sandbox's owner (`owner`), so the agent can change it afterwards.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from runner.safe_walk import DIR_FLAGS, FILE_FLAGS, SafeWalk, WalkLimits

Owner = tuple[int, int] | None
"""The uid and gid a written file gets; None keeps the writer's (unsandboxed bridges)."""

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
FILE_MODE = 0o644
DIR_MODE = 0o755
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
SKIPPED_DIRS = frozenset({"node_modules", ".git", "__pycache__"})
"""Left out of a listing, as the reference does (still readable by path)."""
SKIPPED_SUFFIXES = (".sock", ".lock", ".pid")
SKIPPED_NAMES = frozenset({".DS_Store"})
MAX_UPLOAD_MEMBERS = 100_000
MAX_UPLOAD_UNPACKED = 1024 * 1024 * 1024
"""Bytes of file content one workspace upload may unpack (a gzip bomb stops here)."""
_LINK_ERRNOS = (errno.ELOOP, errno.ENOTDIR)


class UnsafePath(ValueError):
    """A path (or archive member) that could leave the workspace, or goes through a link."""


class NotInWorkspace(LookupError):
    """The path names nothing (or no regular file) in the workspace."""


class TooLarge(ValueError):
    """A file or an archive past its bound."""


@dataclass(frozen=True, slots=True)
class FileInfo:
    path: str
    size: int
    mtime: float


def split_path(path: str) -> list[str]:
    """The names of a client's relative path; UnsafePath for anything that could escape."""
    if "\x00" in path:
        raise UnsafePath("path must not contain a NUL byte")
    if path.startswith("/") or path.startswith("\\"):
        raise UnsafePath(f"path must be relative to the workspace: {path!r}")
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise UnsafePath(f"path is longer than {MAX_PATH_BYTES} bytes")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafePath(f"path must not contain `..`: {path!r}")
    if not parts:
        raise UnsafePath("path names no file")
    for part in parts:
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise UnsafePath(f"a name in the path is longer than {MAX_NAME_BYTES} bytes")
    return parts


def _open_dir(name: str, parent_fd: int, shown: str) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in _LINK_ERRNOS:
            raise UnsafePath(f"{shown} is a symbolic link or not a directory") from None
        if exc.errno == errno.ENOENT:
            raise NotInWorkspace(f"no such directory: {shown}") from None
        raise


def _parent_fd(root: Path, parts: list[str], *, create: bool, owner: Owner) -> int:
    """A descriptor of the directory holding `parts[-1]`, reached link-free from `root`;
    missing directories are made (owned by `owner`) when `create`."""
    fd = os.open(root, DIR_FLAGS)
    try:
        for index, name in enumerate(parts[:-1]):
            shown = "/".join(parts[: index + 1])
            if create:
                try:
                    os.mkdir(name, DIR_MODE, dir_fd=fd)
                except FileExistsError:
                    pass
                else:
                    if owner is not None:
                        os.chown(name, *owner, dir_fd=fd, follow_symlinks=False)
            child = _open_dir(name, fd, shown)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_root(root: Path) -> None:
    """NotInWorkspace when `root` is no directory (the session has no workspace)."""
    if not root.is_dir():
        raise NotInWorkspace(f"no workspace at {root}")


def list_files(root: Path, *, include_hidden: bool = False,
               limits: WalkLimits | None = None) -> list[FileInfo]:
    """The regular files under `root` (links are not followed nor listed)."""
    files: list[FileInfo] = []
    for entry in SafeWalk(root, limits):
        if not entry.is_file:
            continue
        parts = entry.path.split("/")
        if any(part in SKIPPED_DIRS for part in parts[:-1]):
            continue
        if entry.name in SKIPPED_NAMES or entry.name.endswith(SKIPPED_SUFFIXES):
            continue
        if not include_hidden and any(part.startswith(".") for part in parts):
            continue
        files.append(FileInfo(entry.path, entry.st.st_size, entry.st.st_mtime))
    return files


@dataclass(slots=True)
class OpenFile:
    """A regular file of the workspace, open for reading; close it."""

    fd: int
    size: int
    mtime: float

    def read_all(self) -> bytes:
        chunks: list[bytes] = []
        left = self.size
        while left > 0:
            chunk = os.read(self.fd, min(left, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def chunks(self, size: int = 1024 * 1024) -> Iterator[bytes]:
        """At most `self.size` bytes (a file growing while read is cut there)."""
        left = self.size
        while left > 0:
            chunk = os.read(self.fd, min(left, size))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk

    def close(self) -> None:
        os.close(self.fd)


def open_file(root: Path, path: str, max_bytes: int) -> OpenFile:
    """The regular file at `path`, opened without following any link; TooLarge past
    `max_bytes`."""
    parts = split_path(path)
    parent = _parent_fd(root, parts, create=False, owner=None)
    try:
        try:
            fd = os.open(parts[-1], FILE_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in _LINK_ERRNOS:
                raise UnsafePath(f"{path} is a symbolic link") from None
            if exc.errno == errno.ENOENT:
                raise NotInWorkspace(f"file not found: {path}") from None
            raise
    finally:
        os.close(parent)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotInWorkspace(f"not a regular file: {path}")
    if st.st_size > max_bytes:
        os.close(fd)
        raise TooLarge(f"{path} is {st.st_size} bytes, more than the {max_bytes} this "
                       "read returns")
    return OpenFile(fd, st.st_size, st.st_mtime)


def check_writable(root: Path, path: str) -> list[str]:
    """The names of `path` if a write there would go through no link as the tree is now
    (a look before any write, so a batch with a bad path changes nothing); UnsafePath
    otherwise. The write itself opens link-free again: a link made since fails it."""
    parts = split_path(path)
    fd = os.open(root, DIR_FLAGS)
    try:
        for index, name in enumerate(parts):
            shown = "/".join(parts[: index + 1])
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return parts
            if stat.S_ISLNK(st.st_mode):
                raise UnsafePath(f"{shown} is a symbolic link")
            last = index == len(parts) - 1
            if last:
                if not stat.S_ISREG(st.st_mode):
                    raise UnsafePath(f"{shown} exists and is not a regular file")
                return parts
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafePath(f"{shown} is not a directory")
            child = _open_dir(name, fd, shown)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    return parts


def write_file(root: Path, path: str, data: bytes, owner: Owner, mode: int = FILE_MODE) -> int:
    """Write `data` to `path` (parents made as needed), through no link; its size."""
    parts = split_path(path)
    parent = _parent_fd(root, parts, create=True, owner=owner)
    try:
        try:
            fd = os.open(parts[-1], WRITE_FLAGS, FILE_MODE, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (*_LINK_ERRNOS, errno.EISDIR, errno.ENXIO):
                raise UnsafePath(f"{path} is a symbolic link or not a regular file") from None
            raise
    finally:
        os.close(parent)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePath(f"{path} is not a regular file")
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)
    return len(data)


@dataclass(frozen=True, slots=True)
class WriteResult:
    path: str
    written: bool
    size: int = 0
    error: str = ""


def write_files(root: Path, files: list[tuple[str, bytes]], owner: Owner) -> list[WriteResult]:
    """Write a batch: every path is checked first (`check_writable`), so one that could
    leave the workspace refuses the batch (UnsafePath) before anything is written; a file
    that then fails alone (a link made since, a full disk) is reported, the others go on."""
    for path, _ in files:
        check_writable(root, path)
    results: list[WriteResult] = []
    for path, data in files:
        try:
            size = write_file(root, path, data, owner)
        except UnsafePath as exc:
            results.append(WriteResult(path, False, error=str(exc)))
        except OSError as exc:
            results.append(WriteResult(path, False, error=exc.strerror or str(exc)))
        else:
            results.append(WriteResult(path, True, size))
    return results


def delete_file(root: Path, path: str) -> None:
    """Remove the file (or the link itself, never its target) at `path`."""
    parts = split_path(path)
    parent = _parent_fd(root, parts, create=False, owner=None)
    try:
        try:
            os.unlink(parts[-1], dir_fd=parent)
        except FileNotFoundError:
            raise NotInWorkspace(f"file not found: {path}") from None
        except IsADirectoryError:
            raise NotInWorkspace(f"{path} is a directory, not a file") from None
        except OSError as exc:
            if exc.errno == errno.EPERM:  # unlink of a directory on Linux
                raise NotInWorkspace(f"{path} is a directory, not a file") from None
            raise
    finally:
        os.close(parent)


@dataclass(frozen=True, slots=True)
class Bundle:
    """A checked workspace archive: directories, files (with content) and links, in order."""

    dirs: list[list[str]]
    files: list[tuple[list[str], bytes, int]]
    """Names, content, mode."""
    links: list[tuple[list[str], str]]


def check_bundle(archive: bytes, *, max_unpacked: int = MAX_UPLOAD_UNPACKED,
                 max_members: int = MAX_UPLOAD_MEMBERS) -> Bundle:
    """Read a (gzip) tar fully and refuse it whole (UnsafePath, TooLarge) when any member
    could leave the workspace: an absolute or `..` name, a name through a link of the
    archive, a link whose target is absolute or climbs out, a hard link, a device or FIFO."""
    dirs: list[list[str]] = []
    files: list[tuple[list[str], bytes, int]] = []
    links: list[tuple[list[str], str]] = []
    link_paths: set[tuple[str, ...]] = set()
    unpacked = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            for count, member in enumerate(tar, start=1):
                if count > max_members:
                    raise TooLarge(f"archive holds more than {max_members} members")
                name = member.name.removeprefix("./")
                if name in ("", "."):
                    continue
                try:
                    parts = split_path(name)
                except UnsafePath as exc:
                    raise UnsafePath(f"archive member {member.name!r}: {exc}") from None
                if member.isdir():
                    dirs.append(parts)
                elif member.isreg():
                    unpacked += member.size
                    if unpacked > max_unpacked:
                        raise TooLarge(f"archive unpacks to more than {max_unpacked} bytes")
                    source = tar.extractfile(member)
                    assert source is not None
                    files.append((parts, source.read(), member.mode & 0o755 | 0o600))
                elif member.issym():
                    _check_link(parts, member.linkname, member.name)
                    links.append((parts, member.linkname))
                    link_paths.add(tuple(parts))
                else:
                    raise UnsafePath(f"archive member {member.name!r} is a hard link, device "
                                     "or FIFO")
    except tarfile.TarError as exc:
        raise UnsafePath(f"not a valid tar archive: {exc}") from None
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        if isinstance(exc, UnsafePath | TooLarge):
            raise
        raise UnsafePath(f"not a valid (gzip) tar archive: {exc}") from None
    _check_no_member_through_a_link(dirs, files, links, link_paths)
    return Bundle(dirs, files, links)


def _check_no_member_through_a_link(dirs: list[list[str]],
                                    files: list[tuple[list[str], bytes, int]],
                                    links: list[tuple[list[str], str]],
                                    link_paths: set[tuple[str, ...]]) -> None:
    """Whatever the members' order: no member lies under a link of the archive, and no
    link shares its path with a file or directory of it."""
    named = [tuple(parts) for parts in dirs] + [tuple(parts) for parts, _, _ in files]
    for path in named + [tuple(parts) for parts, _ in links]:
        for depth in range(1, len(path)):
            if path[:depth] in link_paths:
                raise UnsafePath(f"archive member {'/'.join(path)} goes through the link "
                                 f"{'/'.join(path[:depth])}")
    for path in named:
        if path in link_paths:
            raise UnsafePath(f"archive member {'/'.join(path)} is both a link and a file "
                             "or directory")


def _check_link(parts: list[str], target: str, shown: str) -> None:
    """A link's target must stay in the workspace read lexically from the link's folder."""
    if not target or "\x00" in target or target.startswith("/"):
        raise UnsafePath(f"archive link {shown!r} points outside the workspace ({target!r})")
    depth = len(parts) - 1
    for part in PurePosixPath(target).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                raise UnsafePath(f"archive link {shown!r} points outside the workspace "
                                 f"({target!r})")
        elif part != ".":
            depth += 1


def apply_bundle(root: Path, bundle: Bundle, owner: Owner) -> int:
    """Write a checked bundle over the workspace (existing files it does not name stay);
    every path is first checked against the tree as it is (`check_writable`), so a link
    the agent made on the way refuses the whole upload before anything is written. Links
    are made last. Returns the files written."""
    for parts in bundle.dirs:
        _check_dir_path(root, parts)
    for parts, _, _ in bundle.files:
        check_writable(root, "/".join(parts))
    for parts, _ in bundle.links:
        _check_dir_path(root, parts[:-1])
        _refuse_existing(root, parts)
    for parts in bundle.dirs:
        parent = _parent_fd(root, [*parts, "."], create=True, owner=owner)
        os.close(parent)
    for parts, data, mode in bundle.files:
        write_file(root, "/".join(parts), data, owner, mode)
    for parts, target in bundle.links:
        parent = _parent_fd(root, parts, create=True, owner=owner)
        try:
            os.symlink(target, parts[-1], dir_fd=parent)
            if owner is not None:
                os.chown(parts[-1], *owner, dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)
    return len(bundle.files)


def _check_dir_path(root: Path, parts: list[str]) -> None:
    """Every existing component of `parts` is a real directory, not a link."""
    if parts:
        check_writable(root, "/".join([*parts, "x"]))


def _refuse_existing(root: Path, parts: list[str]) -> None:
    parent = _parent_fd(root, parts, create=False, owner=None) if _exists_dirs(root, parts) \
        else None
    if parent is None:
        return
    try:
        os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    finally:
        os.close(parent)
    raise UnsafePath(f"archive link {'/'.join(parts)} would replace an existing entry")


def _exists_dirs(root: Path, parts: list[str]) -> bool:
    try:
        os.close(_parent_fd(root, parts, create=False, owner=None))
    except NotInWorkspace:
        return False
    return True
