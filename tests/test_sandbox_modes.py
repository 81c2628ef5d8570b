"""--sandbox: bwrap by default, shown in /health; refusal when the host cannot sandbox;
`none` only when asked for, and loudly."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.cgroups import CgroupV2
from runner.isolation import NONE_WARNING, BwrapIsolation, SandboxUnavailable
from tests.conftest import make_client
from tests.gateway_process import GatewayProcess
from tests.sandbox_helpers import bridge_host_pid, new_session, run


def test_health_shows_the_default_bwrap_sandbox(client) -> None:
    sandbox = client.get("/health").json()["sandbox"]
    assert sandbox["mode"] == "bwrap" and sandbox["cgroups"] in (1, 2)
    assert sandbox["defaultLimits"] == {"memory_mb": 512, "pids": 64, "cpus": 1.0,
                                        "disk_mb": 1024, "tmp_mb": 64}
    assert "warning" not in sandbox


def test_sandbox_none_warns_at_start_and_in_health(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "data", extra_args=["--sandbox", "none"]).start()
    try:
        with make_client(gateway) as client:
            assert client.get("/health").json()["sandbox"] == {"mode": "none",
                                                               "warning": NONE_WARNING}
        assert f"WARNING: {NONE_WARNING}" in gateway.banner
        assert NONE_WARNING in gateway.stderr_path.read_text()
    finally:
        gateway.stop()


def test_gateway_refuses_to_start_without_bubblewrap(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "data", extra_env={"PATH": str(tmp_path)})
    with pytest.raises(RuntimeError, match="gateway exited 2") as refused:
        gateway.start()
    assert "bubblewrap is not installed (apt-get install bubblewrap" in str(refused.value)
    assert "--sandbox=none" in str(refused.value)


def test_gateway_refuses_an_unknown_sandbox_mode(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "data", extra_env={"ASH_SANDBOX": "chroot"})
    with pytest.raises(RuntimeError, match="unknown sandbox mode 'chroot'"):
        gateway.start()


def test_runner_refuses_without_a_usable_cgroup_hierarchy(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(SandboxUnavailable) as refused:
        BwrapIsolation(tmp_path / "data", cgroups=CgroupV2(blocker))
    assert "cannot set up cgroup v2 group" in str(refused.value)
    assert "--sandbox=none" in str(refused.value)


def test_sandbox_host_uid_can_be_chosen(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "data", extra_env={"ASH_SANDBOX_UID": "100123"}).start()
    try:
        with make_client(gateway) as client:
            sid = new_session(client, tmp_path, "chosen")
            assert run(client, sid, "id -u; touch mine")["stdout"] == "1000\n"
        bridge = bridge_host_pid(sid)
        status = Path(f"/proc/{bridge}/status").read_text()
        assert "Uid:\t100123\t100123\t100123\t100123" in status
        assert Path(f"/proc/{bridge}/root/workspace/mine").stat().st_uid == 100123
    finally:
        gateway.stop()


def test_root_as_the_sandbox_uid_is_refused(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "data", extra_env={"ASH_SANDBOX_UID": "0"})
    with pytest.raises(RuntimeError, match="ASH_SANDBOX_UID must be a non-root uid"):
        gateway.start()
