"""The bubblewrap command line of a sandbox: what it sees, and who it runs as.

Inside, a sandbox sees only:

    /usr, /bin, /lib*, /sbin   the host's system, read-only (merged-/usr links mirrored)
    /etc                       a few stub files (passwd, group, hosts, nsswitch.conf) and
                               the host's ld.so.cache, alternatives and localtime, read-only
    <python prefix>            the runtime the bridge runs on, read-only, at its own path
                               (its RUNPATH needs that); its site-packages is hidden
    /opt/ash/lib/<package>     the packages the bridge imports (runner, wire, orjson,
                               uvloop), read-only — not the repository, not the data dir
    /agent                     the agent's folder, read-only
    /workspace                 the session's workspace, read-write (HOME and cwd)
    /tmp                       a private tmpfs of `tmp_mb`
    /proc, /dev                the sandbox's own (its pid namespace; null, zero, tty, ...)

Everything else in the sandbox is read-only. New user, pid, ipc, uts, net and cgroup
namespaces; no network device besides its own loopback; `--die-with-parent`,
`--new-session`, no_new_privs.

Identity. bubblewrap started by root maps the sandbox user to host root (uid 0 with no
capabilities, but uid 0 to every permission check on files): enough to write global
sysctls such as kernel.core_pattern through /proc/sys. So the runner writes the user
namespace's id maps itself (`--userns-block-fd`): sandbox root is host root only while
bubblewrap sets up the mounts, and the sandbox user 1000 is an unprivileged host uid
(`HostIds`, default 100000) that owns nothing on the host but the session's workspace.
Before the bridge starts, a one-line shell (still sandbox root, holding only the four
capabilities it needs) sets `user.max_user_namespaces` to 0 — no nested user namespaces,
the usual first step of a kernel exploit — then `setpriv` becomes uid 1000, clears the
bounding set, and executes Python. The agent's code never has a capability.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import site
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from runner.limits import MIB, SandboxLimits

SANDBOX_UID = 1000
"""The agent's uid and gid inside the sandbox."""
HOME = "/workspace"
AGENT_DIR = "/agent"
LIB_DIR = "/opt/ash/lib"
SITE_DIR = "/opt/ash/site"
PATH = "/usr/local/bin:/usr/bin:/bin"
HOSTNAME = "ash-sandbox"
BRIDGE_PACKAGES = ("runner", "wire", "orjson", "uvloop")
"""What the bridge imports besides the standard library (the mock agent included)."""
FULL_SITE_BACKENDS = frozenset({"claude"})
"""Agent backends whose imports go beyond BRIDGE_PACKAGES: they get the runtime's whole
site-packages, read-only."""
SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
HOST_ETC_FILES = ("/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime")
CAPS_FOR_SETUP = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_SYS_RESOURCE")
"""All the sandbox's first shell keeps: to become uid 1000 (setuid/setgid), to clear the
bounding set (setpcap) and to set user.max_user_namespaces (sys_resource)."""
LOCK_DOWN = 'echo 0 > /proc/sys/user/max_user_namespaces || exit 126; exec "$@"'
HANDSHAKE_TIMEOUT = 10.0

ETC_STUBS = {
    "passwd": "root:x:0:0:root:/root:/usr/sbin/nologin\n"
              f"agent:x:{SANDBOX_UID}:{SANDBOX_UID}:agent:{HOME}:/bin/sh\n"
              "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "group": f"root:x:0:\nagent:x:{SANDBOX_UID}:\nnogroup:x:65534:\n",
    "hosts": f"127.0.0.1 localhost {HOSTNAME}\n::1 localhost ip6-localhost ip6-loopback\n",
    "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
}


class LayoutError(Exception):
    """The runtime cannot be laid out in a sandbox; the message says why."""


@dataclass(frozen=True, slots=True)
class HostIds:
    """The host uid and gid the sandbox user (1000 inside) is, outside."""

    uid: int = 100_000
    gid: int = 100_000

    def id_map(self) -> str:
        """A uid_map/gid_map: sandbox root is host root (for bubblewrap's setup only),
        the sandbox user is this unprivileged host id, and nothing else exists."""
        return f"0 0 1\n{SANDBOX_UID} {self.uid} 1\n"


@dataclass(frozen=True, slots=True)
class Layout:
    """What every sandbox of a runner sees, worked out once when the runner starts."""

    bwrap: str
    setpriv: str
    python: str
    system: tuple[tuple[str, ...], ...]
    etc: tuple[tuple[str, str], ...]
    runtime: tuple[str, ...]
    hidden: tuple[str, ...]
    packages: tuple[tuple[str, str], ...]
    site_dirs: tuple[str, ...]

    @classmethod
    def discover(cls, etc_dir: Path, bwrap: str | None = None) -> Layout:
        """Find the binaries, the runtime and the bridge's packages; write the /etc stubs."""
        bwrap = bwrap or shutil.which("bwrap")
        if bwrap is None:
            raise LayoutError("bubblewrap is not installed (apt-get install bubblewrap, "
                              "dnf install bubblewrap)")
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise LayoutError("setpriv is not installed (it is part of util-linux)")
        python = os.path.realpath(sys.executable)
        runtime = _runtime_dirs()
        if not any(_under(python, d) for d in (*runtime, "/usr")):
            raise LayoutError(f"the Python interpreter {python} is outside its prefix "
                              f"{sys.base_prefix}; cannot lay it out in a sandbox")
        site_dirs = tuple(dict.fromkeys(
            os.path.realpath(p) for p in (*site.getsitepackages(), site.getusersitepackages())
            if os.path.isdir(p)))
        hidden = tuple(d for d in site_dirs if any(_under(d, r) for r in runtime))
        return cls(
            bwrap=bwrap, setpriv=setpriv, python=python, system=_system_mounts(),
            etc=_write_etc(etc_dir), runtime=runtime, hidden=hidden,
            packages=tuple((_package_dir(name), name) for name in BRIDGE_PACKAGES),
            site_dirs=site_dirs,
        )

    def bwrap_args(self, *, agent_dir: str, workspace: Path, limits: SandboxLimits,
                   backend: str, info_fd: int, block_fd: int) -> tuple[list[str], list[str]]:
        """bubblewrap's options, and the sandbox's command (the bridge)."""
        args = [
            "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--unshare-net", "--unshare-cgroup",
            "--userns-block-fd", str(block_fd), "--info-fd", str(info_fd),
            "--hostname", HOSTNAME, "--die-with-parent", "--new-session",
            "--cap-drop", "ALL",
        ]
        for cap in CAPS_FOR_SETUP:
            args += ["--cap-add", cap]
        dirs = _Dirs(args)
        for mount in self.system:
            args += mount
        dirs.make("/etc")
        for source, dest in self.etc:
            args += ["--ro-bind-try", source, dest]
        for runtime in self.runtime:
            dirs.parents_of(runtime)
            args += ["--ro-bind", runtime, runtime]
        for hidden in self.hidden:
            args += ["--tmpfs", hidden, "--remount-ro", hidden]
        paths = [LIB_DIR]
        dirs.make(LIB_DIR)
        for source, name in self.packages:
            args += ["--ro-bind", source, f"{LIB_DIR}/{name}"]
        if backend in FULL_SITE_BACKENDS:
            for index, site_dir in enumerate(self.site_dirs):
                dest = f"{SITE_DIR}/{index}"
                dirs.parents_of(dest)
                args += ["--ro-bind", site_dir, dest]
                paths.append(dest)
        args += [
            "--ro-bind", agent_dir, AGENT_DIR,
            "--bind", str(workspace), HOME,
            "--perms", "1777", "--size", str(limits.tmp_mb * MIB), "--tmpfs", "/tmp",
            "--proc", "/proc", "--dev", "/dev",
            "--remount-ro", "/dev", "--remount-ro", "/",
            "--chdir", HOME,
        ]
        command = [
            "/bin/sh", "-c", LOCK_DOWN, "ash-sandbox",
            self.setpriv, f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups",
            "--bounding-set=-all", "--inh-caps=-all", "--",
            self.python, "-I", "-S", "-B", "-c", bootstrap(paths),
        ]
        return args, command


class _Dirs:
    """Creates a mount point's missing parents as 0755 (bubblewrap would make them 0700,
    which the unprivileged sandbox user could not traverse)."""

    def __init__(self, args: list[str]) -> None:
        self._args = args
        self._made: set[str] = {"/"}

    def make(self, path: str) -> None:
        self.parents_of(path)
        if path not in self._made:
            self._args += ["--perms", "0755", "--dir", path]
            self._made.add(path)

    def parents_of(self, path: str) -> None:
        parent = os.path.dirname(path.rstrip("/"))
        if parent not in self._made:
            self.make(parent)


def bootstrap(paths: Sequence[str]) -> str:
    """The bridge's `-c` program: -I -S keep the host's environment and site-packages
    out of sys.path; these paths go in front of the standard library."""
    return (f"import sys; sys.path[:0] = {list(paths)!r}; "
            "from runner.bridge.server import main; sys.exit(main())")


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _runtime_dirs() -> tuple[str, ...]:
    """The interpreter's prefixes, unless /usr (mounted anyway) already holds them."""
    dirs = dict.fromkeys(os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix))
    return tuple(d for d in dirs if not _under(d, "/usr"))


def _system_mounts() -> tuple[tuple[str, ...], ...]:
    mounts: list[tuple[str, ...]] = [("--ro-bind", "/usr", "/usr")]
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            mounts.append(("--symlink", os.readlink(path), path))
        elif os.path.isdir(path):
            mounts.append(("--ro-bind", path, path))
    return tuple(mounts)


def _write_etc(etc_dir: Path) -> tuple[tuple[str, str], ...]:
    etc_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for name, text in ETC_STUBS.items():
        path = etc_dir / name
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
        path.chmod(0o644)
        files.append((str(path), f"/etc/{name}"))
    files += [(path, path) for path in HOST_ETC_FILES]
    return tuple(files)


def _package_dir(name: str) -> str:
    spec = importlib.util.find_spec(name)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise LayoutError(f"the bridge imports {name!r}, which is not an installed package")
    return os.path.realpath(locations[0])


async def complete_userns(info_fd: int, block_fd: int, ids: HostIds) -> int:
    """bubblewrap's side of the id-map handshake: read the sandbox's pid from `info_fd`,
    write its uid and gid maps, let it go on. Returns the pid. Both fds are closed."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    data = b""

    def readable() -> None:
        nonlocal data
        try:
            chunk = os.read(info_fd, 4096)
        except BlockingIOError:
            return
        data += chunk
        if not chunk or _child_pid(data) is not None:
            loop.remove_reader(info_fd)
            if not ready.done():
                ready.set_result(None)

    os.set_blocking(info_fd, False)
    loop.add_reader(info_fd, readable)
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            await ready
        pid = _child_pid(data)
        if pid is None:
            raise LayoutError("bubblewrap exited before creating the sandbox")
        write_id_maps(pid, ids)
        os.write(block_fd, b"1")
        return pid
    finally:
        loop.remove_reader(info_fd)
        os.close(info_fd)
        os.close(block_fd)


def write_id_maps(pid: int, ids: HostIds) -> None:
    """Writing /proc files is quick and never blocks on a disk."""
    maps = ids.id_map().encode()
    for name in ("uid_map", "gid_map"):
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, maps)
        finally:
            os.close(fd)


def _child_pid(data: bytes) -> int | None:
    try:
        info = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    pid = info.get("child-pid") if isinstance(info, dict) else None
    return pid if isinstance(pid, int) else None
