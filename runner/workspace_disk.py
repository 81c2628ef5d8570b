"""Size-limited workspaces: one sparse ext4 image per session, loop-mounted at its workspace.

    sandboxes/<session>/workspace.img   the session's disk (sparse: it takes what is used)
    sandboxes/<session>/workspace/      where it is mounted while something uses it

The filesystem's size is the limit: a full workspace gets ENOSPC and the host's disk
is never touched beyond the image. The image stays in the data dir between sandboxes,
so the workspace survives a runner restart (cold resume). A new image is a sparse copy
of a per-size template made once with mkfs (the copy takes about a millisecond; mkfs,
once, about ten), and it is attached and mounted with ioctls and mount(2) — no helper
processes on the hot path. Mounts are nosuid, nodev and noatime, and are made in the
runner's own mount namespace (`private_mount_namespace`): a runner that dies, however
it dies, leaves none behind. Where that is impossible, the next runner on the data dir
reaps them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import stat
import struct
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from runner import mountinfo
from runner.safe_walk import SafeWalk

IMAGE_FILE = "workspace.img"
WORKSPACE_DIR = "workspace"
TEMPLATES_DIR = ".images"
FULL_BELOW = (1024 * 1024, 0.01)
"""A workspace counts as full with less than 1 MiB or 1% of its size free (whichever is
more): a write that failed with ENOSPC can leave up to its own size unused."""

LOOP_CONTROL = "/dev/loop-control"
LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LOOP_SET_FD = 0x4C00
LOOP_SET_STATUS64 = 0x4C04
LOOP_CLR_FD = 0x4C01
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16
LOOP_MAJOR = 7
_LOOP_INFO64 = struct.Struct("=QQQQQIIII64s64s32sQQ")
_LOOP_CONFIG = struct.Struct(f"=II{_LOOP_INFO64.size}s64x")
MS_NOSUID, MS_NODEV, MS_NOATIME = 2, 4, 1024
MS_REC, MS_SLAVE = 0x4000, 0x80000
MNT_DETACH = 2
CLONE_NEWNS = 0x00020000
_libc = ctypes.CDLL(None, use_errno=True)
_private_namespace = False


class DiskUnavailable(Exception):
    """Loop devices or mkfs.ext4 are missing; the message says what to install."""


class WorkspaceBusy(Exception):
    """The workspace is mounted for another user and cannot be replaced now."""


@dataclass(slots=True)
class _Mounted:
    refs: int


def _check_errno(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def _mount(source: str, target: Path, fstype: str, flags: int) -> None:
    _check_errno(_libc.mount(source.encode(), os.fsencode(target), fstype.encode(), flags, None),
                 f"mount {source} on {target}")


def _umount(target: Path) -> None:
    """Unmount; a mount still in use (a dying sandbox's files) is detached lazily."""
    if _libc.umount2(os.fsencode(target), 0) == 0:
        return
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOENT):
        return
    _check_errno(_libc.umount2(os.fsencode(target), MNT_DETACH), f"umount {target}")


def private_mount_namespace() -> bool:
    """Move this process into a mount namespace of its own, receiving the host's mounts
    but not sharing its own: its workspace mounts then vanish with it. Only possible
    while the process has a single thread; False when it could not."""
    global _private_namespace
    if not _private_namespace:
        if _libc.unshare(CLONE_NEWNS) != 0:
            return False
        _check_errno(_libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None),
                     "make / a slave mount")
        _private_namespace = True
    return True


def _loop_device(number: int) -> str:
    path = f"/dev/loop{number}"
    if not os.path.exists(path):
        with contextlib.suppress(FileExistsError):
            os.mknod(path, 0o660 | stat.S_IFBLK, os.makedev(LOOP_MAJOR, number))
    return path


def attach_loop(image: Path) -> tuple[str, int]:
    """A free loop device backed by `image`, and an open fd on it. The device frees itself
    once nothing uses it, so keep the fd open until it is mounted, then close it."""
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        control = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(16):
                number = _check_errno(fcntl.ioctl(control, LOOP_CTL_GET_FREE), "LOOP_CTL_GET_FREE")
                device = _loop_device(number)
                loop = os.open(device, os.O_RDWR | os.O_CLOEXEC)
                try:
                    _configure(loop, backing)
                except OSError as exc:
                    os.close(loop)
                    if exc.errno != errno.EBUSY:
                        raise
                    continue
                return device, loop
            raise OSError(errno.EBUSY, "no free loop device after 16 tries")
        finally:
            os.close(control)
    finally:
        os.close(backing)


def mount_image(image: Path, target: Path, flags: int = MS_NOSUID | MS_NODEV | MS_NOATIME) -> None:
    """Loop-mount an ext4 image; the loop device goes away with the mount."""
    device, loop = attach_loop(image)
    try:
        _mount(device, target, "ext4", flags)
    except OSError:
        with contextlib.suppress(OSError):
            fcntl.ioctl(loop, LOOP_CLR_FD, 0)
        raise
    finally:
        os.close(loop)


def _configure(loop: int, backing: int) -> None:
    info = _LOOP_INFO64.pack(0, 0, 0, 0, 0, 0, 0, 0, LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO,
                             b"", b"", b"", 0, 0)
    try:
        fcntl.ioctl(loop, LOOP_CONFIGURE, _LOOP_CONFIG.pack(backing, 0, info))
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTTY):
            raise
        fcntl.ioctl(loop, LOOP_SET_FD, backing)
        try:
            fcntl.ioctl(loop, LOOP_SET_STATUS64, _LOOP_INFO64.pack(
                0, 0, 0, 0, 0, 0, 0, 0, LO_FLAGS_AUTOCLEAR, b"", b"", b"", 0, 0))
        except OSError:
            fcntl.ioctl(loop, LOOP_CLR_FD, 0)
            raise


def sparse_copy(source: Path, target: Path) -> None:
    """Copy only `source`'s data extents; the holes stay holes."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        size = os.fstat(src.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break
                raise
            end = os.lseek(src.fileno(), start, os.SEEK_HOLE)
            position = start
            while position < end:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), end - position,
                                            position, position)
                if copied == 0:
                    break
                position += copied
            offset = end
        os.ftruncate(dst.fileno(), size)


class WorkspaceDisks:
    """Every session workspace under one `sandboxes` directory, as its own ext4 image."""

    def __init__(self, sandboxes_dir: Path, owner: tuple[int, int]) -> None:
        """`owner`: host uid and gid that own a new workspace's root directory."""
        self._sandboxes_dir = sandboxes_dir
        self._owner = owner
        self._lock = threading.Lock()
        self._mounted: dict[Path, _Mounted] = {}
        self._mkfs = shutil.which("mkfs.ext4") or shutil.which("mke2fs")

    def check(self) -> None:
        if not os.path.exists(LOOP_CONTROL):
            raise DiskUnavailable(f"{LOOP_CONTROL} is missing: workspace disk limits need loop "
                                  "devices (modprobe loop; in a container, pass /dev/loop-control "
                                  "and the loop devices through)")
        if self._mkfs is None:
            raise DiskUnavailable("mkfs.ext4 is not installed: workspace disk limits need it "
                                  "(apt-get install e2fsprogs)")

    # paths

    @staticmethod
    def image(sandbox_dir: Path) -> Path:
        return sandbox_dir / IMAGE_FILE

    @staticmethod
    def workspace(sandbox_dir: Path) -> Path:
        return sandbox_dir / WORKSPACE_DIR

    # images

    def attach(self, sandbox_dir: Path, size_mb: int, *, fresh: bool = False) -> bool:
        """Mount the session's workspace (making its image first if it has none); True when
        the image already existed. `fresh` replaces any image with an empty one. Every
        `attach` is paired with a `detach`: the mount is shared by counting."""
        workspace = self.workspace(sandbox_dir)
        with self._lock:
            mounted = self._mounted.get(workspace)
            if mounted is not None:
                if fresh:
                    raise WorkspaceBusy(f"workspace {workspace} is in use")
                mounted.refs += 1
                return True
            image = self.image(sandbox_dir)
            existed = image.exists() and not fresh
            sandbox_dir.mkdir(parents=True, exist_ok=True)
            if not existed:
                self._new_image(image, size_mb)
            workspace.mkdir(exist_ok=True)
            if os.path.ismount(workspace):
                _umount(workspace)
            mount_image(image, workspace)
            self._mounted[workspace] = _Mounted(1)
            return existed

    def retain(self, sandbox_dir: Path) -> bool:
        """Count one more user of a workspace that is mounted already, without blocking:
        False when it is not mounted, or another thread is mounting one (then `attach`,
        which may block, is the way)."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            mounted = self._mounted.get(self.workspace(sandbox_dir))
            if mounted is None:
                return False
            mounted.refs += 1
            return True
        finally:
            self._lock.release()

    def release(self, sandbox_dir: Path) -> bool:
        """Drop one user without blocking, unless it is the last (whose `detach` unmounts):
        True when done."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            mounted = self._mounted.get(self.workspace(sandbox_dir))
            if mounted is None or mounted.refs <= 1:
                return mounted is None
            mounted.refs -= 1
            return True
        finally:
            self._lock.release()

    def detach(self, sandbox_dir: Path) -> None:
        """Drop one `attach`; the last one unmounts (the loop device frees itself)."""
        workspace = self.workspace(sandbox_dir)
        with self._lock:
            mounted = self._mounted.get(workspace)
            if mounted is None:
                return
            mounted.refs -= 1
            if mounted.refs > 0:
                return
            del self._mounted[workspace]
            _umount(workspace)

    def move(self, sandbox_dir: Path, to: Path) -> None:
        """Rename a sandbox directory, its image and its mounted workspace with it (a warm
        sandbox's becoming its session's). `to` must not exist. The mount follows the
        rename, and so do the sandbox's bind mounts of it."""
        with self._lock:
            if to.exists():
                raise FileExistsError(errno.EEXIST, f"{to} already exists")
            os.rename(sandbox_dir, to)
            mounted = self._mounted.pop(self.workspace(sandbox_dir), None)
            if mounted is not None:
                self._mounted[self.workspace(to)] = mounted

    def remove(self, sandbox_dir: Path) -> None:
        """Delete the session's sandbox directory, image included (unmounting it first)."""
        workspace = self.workspace(sandbox_dir)
        with self._lock:
            if self._mounted.pop(workspace, None) is not None or os.path.ismount(workspace):
                _umount(workspace)
        # rmtree is descriptor-based on Linux (shutil.rmtree.avoids_symlink_attacks): a link
        # left in the directory is removed, never followed.
        shutil.rmtree(sandbox_dir, ignore_errors=True)

    def is_mounted(self, sandbox_dir: Path) -> bool:
        return self.workspace(sandbox_dir) in self._mounted

    def has_image(self, sandbox_dir: Path) -> bool:
        return self.image(sandbox_dir).exists()

    def full(self, sandbox_dir: Path) -> bool:
        """Whether the mounted workspace is out of space or inodes."""
        workspace = self.workspace(sandbox_dir)
        if workspace not in self._mounted:
            return False
        try:
            fs = os.statvfs(workspace)
        except OSError:
            return False
        floor = max(FULL_BELOW[0], FULL_BELOW[1] * fs.f_blocks * fs.f_frsize)
        return fs.f_bavail * fs.f_frsize < floor or (fs.f_files > 0 and fs.f_favail == 0)

    def close(self) -> None:
        """Unmount every workspace this object mounted (images stay for a cold resume)."""
        with self._lock:
            for workspace in list(self._mounted):
                del self._mounted[workspace]
                with contextlib.suppress(OSError):
                    _umount(workspace)

    def reap_stale(self) -> int:
        """Unmount workspaces under our directory left mounted by a runner that died."""
        prefix = f"{self._sandboxes_dir.resolve()}/"
        stale = [m.path for m in mountinfo.read()
                 if f"{m.path}/".startswith(prefix) and m.path not in self._mounted]
        for path in reversed(stale):
            with contextlib.suppress(OSError):
                _umount(path)
        return len(stale)

    def _new_image(self, image: Path, size_mb: int) -> None:
        template = self._template(size_mb)
        partial = image.with_name(f".{image.name}.{os.getpid()}.partial")
        try:
            sparse_copy(template, partial)
            partial.replace(image)
        finally:
            partial.unlink(missing_ok=True)

    def _template(self, size_mb: int) -> Path:
        """An empty ext4 image of `size_mb` (made once, then copied for every session)."""
        templates = self._sandboxes_dir / TEMPLATES_DIR
        uid, gid = self._owner
        template = templates / f"ext4-{size_mb}m-{uid}.{gid}.img"
        if template.exists():
            return template
        templates.mkdir(parents=True, exist_ok=True)
        assert self._mkfs is not None
        with tempfile.TemporaryDirectory(dir=templates) as scratch:
            draft = Path(scratch) / "image"
            with open(draft, "wb") as f:
                f.truncate(size_mb * 1024 * 1024)
            journal = ["-J", "size=4"] if size_mb >= 128 else ["-O", "^has_journal"]
            result = subprocess.run(
                [self._mkfs, "-q", "-F", "-t", "ext4", "-m", "0", *journal,
                 "-E", f"lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner={uid}:{gid}",
                 str(draft)],
                capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise OSError(f"mkfs.ext4 failed: {result.stderr.strip()}")
            self._drop_lost_and_found(draft, Path(scratch) / "mnt")
            draft.replace(template)
        return template

    def _drop_lost_and_found(self, image: Path, mount_point: Path) -> None:
        """An agent's workspace should hold only what it put there."""
        mount_point.mkdir()
        mount_image(image, mount_point)
        try:
            with contextlib.suppress(OSError):
                (mount_point / "lost+found").rmdir()
        finally:
            _umount(mount_point)


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give everything under `root` (links themselves, not their targets) to uid:gid.

    Through the walk's directory descriptors (`runner.safe_walk`), like every host-side walk
    of a workspace: no path is resolved again, so no link met on the way is followed."""
    os.lchown(root, uid, gid)
    for entry in SafeWalk(root):
        os.chown(entry.name, uid, gid, dir_fd=entry.parent_fd, follow_symlinks=False)
