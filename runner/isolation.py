"""How a runner isolates its sandboxes: `bwrap` (the default) or `none` (development only).

`BwrapIsolation` puts every bridge in a bubblewrap sandbox (`runner.bwrap`), in its own
cgroup with memory, pids and cpu limits (`runner.cgroups`), on a workspace that is a
size-limited filesystem of its own (`runner.workspace_disk`), and stops the whole
sandbox the moment it hits a limit (`runner.limit_watch`). It refuses to start — with a
message saying what to install or configure — when any of that is missing: a runner
never runs agents less isolated than it was asked to.

`NoIsolation` (`--sandbox=none`) runs bridges as plain child processes, exactly as a
developer's shell would, and says so loudly: in the log at start and in `/health`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from runner.backend import BackendError, SandboxGone, SandboxStartError
from runner.bwrap import HostIds, Layout, LayoutError, complete_userns
from runner.cgroups import CgroupTree, CgroupUnavailable, SandboxCgroup, detect
from runner.limit_watch import LimitWatcher
from runner.limits import LimitHit, SandboxLimits, disk_hit, memory_hit, pids_hit
from runner.sandbox import LOG_FILE, BridgeProcess, SandboxSpec
from runner.workspace_disk import (
    DiskUnavailable,
    WorkspaceBusy,
    WorkspaceDisks,
    chown_tree,
    private_mount_namespace,
)
from runner.workspace_state import pack_workspace, prepare_workspace, restore_workspace

log = logging.getLogger("ash.runner")

MODES = ("bwrap", "none")
DEFAULT_MODE = "bwrap"
MODE_ENV = "ASH_SANDBOX"
UID_ENV = "ASH_SANDBOX_UID"
SANDBOXES_DIR = "sandboxes"
NONE_WARNING = ("sandboxing is OFF (--sandbox=none): agents run as plain processes with this "
                "runner's user, environment-free but with full access to its files, network "
                "and processes. For development only; never expose this runner.")
JOIN_CGROUPS = (
    'for f; do shift; [ "$f" = -- ] && exec "$@"; '
    'echo $$ > "$f" || { echo "ash-sandbox: cannot join cgroup $f" >&2; exit 125; }; done; '
    "exit 125"
)
"""The sandbox's first process (`/bin/sh`, still the runner's child) writes its own pid into
each cgroup.procs given before `--`, then becomes bubblewrap: everything the sandbox runs
is born in the cgroup."""
CGROUP_REMOVE_TIMEOUT = 5.0


class SandboxUnavailable(Exception):
    """This host cannot run the requested sandbox; the message says what to do."""


@dataclass(slots=True, eq=False)
class SandboxHandle:
    """What a running sandbox holds that the runner must watch and give back."""

    limits: SandboxLimits
    sandbox_dir: Path
    cgroup: SandboxCgroup


class Isolation(Protocol):
    mode: str
    sandboxed: bool

    async def prepare(self, spec: SandboxSpec, state: bytes | None) -> bool:
        """Make the session's workspace ready (restoring `state` into it when given);
        True when it holds earlier state. Pair with `release_workspace`."""
        ...

    async def start(self, spec: SandboxSpec, env: Mapping[str, str], *, bridge_fd: int,
                    output_fd: int) -> tuple[asyncio.subprocess.Process, SandboxHandle]:
        """Start the bridge in a sandbox (sandboxing isolations only)."""
        ...

    async def release_bridge(self, bridge: BridgeProcess) -> None:
        """Give back what an exited bridge's sandbox held (its cgroup)."""
        ...

    async def release_workspace(self, spec: SandboxSpec) -> None: ...

    def adopt(self, bridge: BridgeProcess, sandbox_dir: Path, to: Path) -> None:
        """Move a running warm sandbox's directory (workspace, log) to its session's
        `to` (sandboxing isolations only). Blocking, if briefly: run it in a thread."""
        ...

    async def remove(self, sandbox_dir: Path) -> None:
        """Delete a session's sandbox directory and everything in it."""
        ...

    @property
    def owner(self) -> tuple[int, int] | None:
        """The host uid and gid of the sandbox's agent: what files the host writes into a
        workspace get (None: they keep the writer's)."""
        ...

    def workspace(self, sandbox_dir: Path) -> contextlib.AbstractAsyncContextManager[Path]:
        """The session's workspace, readable for as long as the context lasts."""
        ...

    def limit_hit(self, bridge: BridgeProcess) -> LimitHit | None:
        """The limit the bridge's sandbox hit, if it hit one."""
        ...

    def status(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class NoIsolation:
    """Bridges as plain child processes (`--sandbox=none`)."""

    mode = "none"
    sandboxed = False

    def __init__(self) -> None:
        log.warning("%s\n%s\n%s", "!" * 78, NONE_WARNING, "!" * 78)

    async def prepare(self, spec: SandboxSpec, state: bytes | None) -> bool:
        return await asyncio.to_thread(prepare_workspace, spec.workspace, state)

    async def start(self, spec: SandboxSpec, env: Mapping[str, str], *, bridge_fd: int,
                    output_fd: int) -> tuple[asyncio.subprocess.Process, SandboxHandle]:
        raise NotImplementedError("NoIsolation starts no sandboxes")

    async def release_bridge(self, bridge: BridgeProcess) -> None:
        return None

    async def release_workspace(self, spec: SandboxSpec) -> None:
        return None

    def adopt(self, bridge: BridgeProcess, sandbox_dir: Path, to: Path) -> None:
        raise NotImplementedError("NoIsolation has no warm sandboxes")

    async def remove(self, sandbox_dir: Path) -> None:
        await asyncio.to_thread(shutil.rmtree, sandbox_dir, True)

    @property
    def owner(self) -> tuple[int, int] | None:
        return None

    @contextlib.asynccontextmanager
    async def workspace(self, sandbox_dir: Path) -> AsyncIterator[Path]:
        yield sandbox_dir / "workspace"

    def limit_hit(self, bridge: BridgeProcess) -> LimitHit | None:
        return None

    def status(self) -> dict[str, Any]:
        return {"mode": self.mode, "warning": NONE_WARNING}

    async def close(self) -> None:
        return None


class BwrapIsolation:
    """bubblewrap namespaces, cgroup limits and a disk of its own for every sandbox."""

    mode = "bwrap"
    sandboxed = True

    def __init__(self, data_dir: Path, *, defaults: SandboxLimits | None = None,
                 ids: HostIds | None = None, cgroups: CgroupTree | None = None) -> None:
        """Checks everything a sandbox needs, reaps what a dead runner left (cgroups, mounts),
        and creates this runner's cgroup; SandboxUnavailable says what is missing."""
        if os.geteuid() != 0:
            raise SandboxUnavailable(
                "the bwrap sandbox needs root: it creates cgroups, loop-mounts workspaces and "
                "maps each sandbox to an unprivileged uid. Run the runner as root, or start it "
                "with --sandbox=none for development only")
        self.defaults = defaults or SandboxLimits()
        self.ids = ids or HostIds()
        sandboxes_dir = Path(data_dir).resolve() / SANDBOXES_DIR
        try:
            self._layout = Layout.discover(sandboxes_dir / ".etc")
            self._disks = WorkspaceDisks(sandboxes_dir, (self.ids.uid, self.ids.gid))
            self._disks.check()
            self._probe()
            self._cgroups = cgroups or detect()
            reaped = self._cgroups.reap_stale()
            self._cgroups.open()
        except (LayoutError, DiskUnavailable, CgroupUnavailable) as exc:
            raise SandboxUnavailable(f"{exc} — or start with --sandbox=none (development "
                                     "only)") from exc
        unmounted = self._disks.reap_stale()  # before unsharing: they are the host's mounts
        if not private_mount_namespace():
            log.warning("this runner is multithreaded at start: workspace mounts stay visible "
                        "host-wide and outlive it if it crashes (the next runner on this data "
                        "dir reaps them)")
        if reaped or unmounted:
            log.info("reaped %d cgroup group(s) and %d workspace mount(s) left by a dead runner",
                     reaped, unmounted)
        self._watcher = LimitWatcher()

    def _probe(self) -> None:
        """Run one empty sandbox: bubblewrap may be installed yet unable to work here."""
        command = [self._layout.bwrap, "--unshare-all", "--die-with-parent"]
        for mount in self._layout.system:
            command += mount
        command += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", "65536",
                    "--tmpfs", "/tmp", "--", "/bin/true"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=30,
                                    check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxUnavailable(f"bubblewrap cannot run: {exc}") from exc
        if result.returncode != 0:
            raise SandboxUnavailable(
                f"bubblewrap cannot create a sandbox on this host: {result.stderr.strip()} "
                "(it needs user, pid and network namespaces; in a container, allow them) — "
                "or start with --sandbox=none (development only)")

    def limits_for(self, spec: SandboxSpec) -> SandboxLimits:
        try:
            return self.defaults.with_config(spec.agent.config)
        except ValueError as exc:
            raise SandboxStartError(str(exc)) from None

    # workspace

    async def prepare(self, spec: SandboxSpec, state: bytes | None) -> bool:
        limits = self.limits_for(spec)
        if not await asyncio.to_thread(os.path.isdir, spec.agent.path):
            raise SandboxStartError(f"agent folder not found: {spec.agent.path}")
        try:
            return await asyncio.to_thread(self._prepare, spec.sandbox_dir, limits.disk_mb, state)
        except WorkspaceBusy as exc:
            raise BackendError(str(exc)) from None
        except OSError as exc:
            raise SandboxStartError(f"cannot mount the workspace of {spec.session_id}: {exc}"
                                    ) from exc

    def _prepare(self, sandbox_dir: Path, disk_mb: int, state: bytes | None) -> bool:
        workspace = self._disks.workspace(sandbox_dir)
        if (state is None and not self._disks.has_image(sandbox_dir) and workspace.is_dir()
                and not os.path.ismount(workspace) and any(workspace.iterdir())):
            state = pack_workspace(workspace)  # made with --sandbox=none: move it onto a disk
            shutil.rmtree(workspace)  # descriptor-based: follows no link (avoids_symlink_attacks)
        existed = self._disks.attach(sandbox_dir, disk_mb, fresh=state is not None)
        if state is None:
            return existed
        try:
            restore_workspace(workspace, state)
            chown_tree(workspace, self.ids.uid, self.ids.gid)
        except BaseException:
            self._disks.detach(sandbox_dir)
            raise
        return True

    async def release_workspace(self, spec: SandboxSpec) -> None:
        await asyncio.to_thread(self._disks.detach, spec.sandbox_dir)

    async def remove(self, sandbox_dir: Path) -> None:
        await asyncio.to_thread(self._disks.remove, sandbox_dir)

    def adopt(self, bridge: BridgeProcess, sandbox_dir: Path, to: Path) -> None:
        try:
            self._disks.move(sandbox_dir, to)
        except OSError as exc:
            raise SandboxStartError(f"cannot move a warm sandbox to {to}: {exc}") from exc
        bridge.move_log(to / LOG_FILE)
        if bridge.sandbox is not None:
            bridge.sandbox.sandbox_dir = to

    @property
    def owner(self) -> tuple[int, int] | None:
        return self.ids.uid, self.ids.gid

    @contextlib.asynccontextmanager
    async def workspace(self, sandbox_dir: Path) -> AsyncIterator[Path]:
        """Mounted for the context (it may already be, by its sandbox)."""
        if not self._disks.has_image(sandbox_dir):
            raise SandboxGone(f"no workspace disk in {sandbox_dir}")
        # A live sandbox's disk is mounted: counting one more user needs no thread (a
        # snapshot before every `done` would pay two thread hops for nothing).
        if not self._disks.retain(sandbox_dir):
            await asyncio.to_thread(self._disks.attach, sandbox_dir, 0)
        try:
            yield self._disks.workspace(sandbox_dir)
        finally:
            if not self._disks.release(sandbox_dir):
                await asyncio.to_thread(self._disks.detach, sandbox_dir)

    # sandboxes

    async def start(self, spec: SandboxSpec, env: Mapping[str, str], *, bridge_fd: int,
                    output_fd: int) -> tuple[asyncio.subprocess.Process, SandboxHandle]:
        limits = self.limits_for(spec)
        try:
            cgroup = self._cgroups.create(f"{spec.session_id}.{secrets.token_hex(3)}", limits)
        except OSError as exc:
            raise SandboxStartError(f"cannot create the sandbox's cgroup: {exc}") from exc
        handle = SandboxHandle(limits, spec.sandbox_dir, cgroup)
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        process: asyncio.subprocess.Process | None = None
        try:
            options, command = self._layout.bwrap_args(
                agent_dir=spec.agent.path, workspace=spec.workspace,
                limits=limits, backend=spec.backend, info_fd=info_w, block_fd=block_r)
            args_fd = args_pipe(options)
            try:
                process = await asyncio.create_subprocess_exec(
                    "/bin/sh", "-c", JOIN_CGROUPS, "ash-sandbox",
                    *map(str, cgroup.procs_files), "--",
                    self._layout.bwrap, "--args", str(args_fd), "--", *command,
                    cwd="/", env=dict(env), stdin=asyncio.subprocess.DEVNULL,
                    stdout=output_fd, stderr=output_fd,
                    pass_fds=(bridge_fd, info_w, block_r, args_fd),
                    start_new_session=True,  # the runner terminal's Ctrl-C is not the sandbox's
                )
            finally:
                os.close(info_w)
                os.close(block_r)
                os.close(args_fd)
            try:
                await complete_userns(info_r, block_w, self.ids)
            finally:
                info_r = block_w = -1
        except BaseException as exc:
            for fd in (info_r, block_w):
                if fd >= 0:
                    os.close(fd)
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
            await self._remove_cgroup(cgroup)
            if isinstance(exc, (LayoutError, OSError)):
                raise SandboxStartError(f"sandbox did not start: {exc}") from exc
            raise
        self._watcher.watch(cgroup, lambda: self._stop_on_limit(process, cgroup))
        return process, handle

    @staticmethod
    def _stop_on_limit(process: asyncio.subprocess.Process, cgroup: SandboxCgroup) -> None:
        log.info("sandbox %s hit a limit; stopping it", cgroup.name)
        cgroup.kill()
        with contextlib.suppress(ProcessLookupError):
            process.kill()

    async def release_bridge(self, bridge: BridgeProcess) -> None:
        if bridge.log_pump is not None:
            bridge.log_pump.drain()
            bridge.log_pump.close()
        if bridge.sandbox is not None:
            await self._remove_cgroup(bridge.sandbox.cgroup)

    async def _remove_cgroup(self, cgroup: SandboxCgroup) -> None:
        """Kill what is left in the group and remove it (its last processes may take a
        moment to leave after bubblewrap has exited)."""
        self._watcher.unwatch(cgroup)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CGROUP_REMOVE_TIMEOUT
        while not cgroup.try_remove():
            if loop.time() > deadline:
                log.warning("cgroup %s still busy after %g s; left for the next reap",
                            cgroup.name, CGROUP_REMOVE_TIMEOUT)
                return
            cgroup.kill()
            await asyncio.sleep(0.01)

    def limit_hit(self, bridge: BridgeProcess) -> LimitHit | None:
        handle = bridge.sandbox
        if handle is None:
            return None
        counters = handle.cgroup.counters()
        if counters.oom_kills:
            return memory_hit(handle.limits)
        if counters.pids_max_hits:
            return pids_hit(handle.limits)
        if self._disks.full(handle.sandbox_dir):
            return disk_hit(handle.limits)
        return None

    def status(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "cgroups": self._cgroups.version,
            "defaultLimits": self.defaults.as_json(),
            "hostUid": self.ids.uid,
            "workspaceDisk": "ext4 image per session",
        }

    async def close(self) -> None:
        self._watcher.close()
        await asyncio.to_thread(self._disks.close)
        await asyncio.to_thread(self._cgroups.close)


def args_pipe(args: list[str]) -> int:
    """A pipe holding bubblewrap's options for `--args`: they stay out of the sandbox's
    /proc/1/cmdline, and with them the host paths they name."""
    data = b"".join(os.fsencode(arg) + b"\0" for arg in args)
    read_fd, write_fd = os.pipe()
    try:
        if len(data) > 65536:
            raise SandboxStartError("bubblewrap's options do not fit in a pipe")
        os.write(write_fd, data)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return read_fd


def create_isolation(mode: str, data_dir: Path,
                     environ: Mapping[str, str] = os.environ) -> Isolation:
    """The isolation `mode` names; SandboxUnavailable when the host cannot provide it.
    ASH_SANDBOX_UID picks the host uid (and gid) sandboxes run as."""
    if mode == "bwrap":
        raw_uid = environ.get(UID_ENV) or str(HostIds().uid)
        if not raw_uid.isdigit() or not 0 < int(raw_uid) < 2**32 - 1:
            raise SandboxUnavailable(f"{UID_ENV} must be a non-root uid, not {raw_uid!r}")
        return BwrapIsolation(data_dir, ids=HostIds(int(raw_uid), int(raw_uid)))
    if mode == "none":
        return NoIsolation()
    raise SandboxUnavailable(f"unknown sandbox mode {mode!r} (known: {', '.join(MODES)})")


def mode_from_env(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get(MODE_ENV) or DEFAULT_MODE


def add_sandbox_argument(parser: argparse.ArgumentParser) -> None:
    """`--sandbox bwrap|none` (ASH_SANDBOX), the same for every entry point that runs
    sandboxes; an unknown ASH_SANDBOX is refused by `create_isolation`."""
    parser.add_argument("--sandbox", choices=MODES, default=mode_from_env(),
                        help="bwrap: bubblewrap namespaces + cgroup limits + a disk per "
                        "workspace (needs root, bubblewrap, cgroups and loop devices; refuses "
                        "to start without them); none: plain processes, development only "
                        "(ASH_SANDBOX, default bwrap)")
