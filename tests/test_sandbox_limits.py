"""Sandbox limits: the defaults, an agent's overrides, and what a client is told on a hit."""

from __future__ import annotations

import orjson
import pytest

from runner.limits import SandboxLimits, disk_hit, memory_hit, pids_hit

DEFAULTS = SandboxLimits()


def test_defaults_are_512_mib_64_processes_one_core_and_a_1_gib_disk() -> None:
    assert (DEFAULTS.memory_mb, DEFAULTS.pids, DEFAULTS.cpus, DEFAULTS.disk_mb) == (
        512, 64, 1.0, 1024)


def test_agent_limits_override_only_what_they_name() -> None:
    limits = DEFAULTS.with_config({"limits": {"memory_mb": 256, "cpus": 0.5}})
    assert limits == SandboxLimits(memory_mb=256, pids=64, cpus=0.5, disk_mb=1024, tmp_mb=64)


def test_an_agent_without_limits_gets_the_defaults() -> None:
    assert DEFAULTS.with_config({"backend": "mock"}) is DEFAULTS


@pytest.mark.parametrize(("limits", "named"), [
    ({"memory_mb": "lots"}, "limits.memory_mb"),
    ({"pids": True}, "limits.pids"),
    ({"pids": 2.5}, "limits.pids"),
    ({"memory_mb": 4}, "limits.memory_mb"),
    ({"cpus": 0}, "limits.cpus"),
    ({"disk_mb": float("inf")}, "limits.disk_mb"),
    ({"swap_mb": 1}, "unknown keys: swap_mb"),
    ([], "must be an object"),
])
def test_bad_limits_are_refused_naming_the_field(limits: object, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        DEFAULTS.with_config({"limits": limits})


def test_a_hit_tells_the_client_its_cause_and_limit() -> None:
    limits = SandboxLimits(memory_mb=256, pids=32, disk_mb=100)
    payloads = [orjson.loads(hit.payload()) for hit in
                (memory_hit(limits), pids_hit(limits), disk_hit(limits))]
    assert [(p["code"], p["limit"], p["unit"]) for p in payloads] == [
        ("memory_limit", 256, "MiB"), ("pids_limit", 32, "processes"), ("disk_limit", 100, "MiB")]
    assert "256 MiB memory limit" in payloads[0]["error"]
    assert "limit of 32 processes" in payloads[1]["error"]
    assert "100 MiB disk limit" in payloads[2]["error"]
