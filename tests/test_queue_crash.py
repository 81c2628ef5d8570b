"""The queue across a gateway killed with SIGKILL while items are pending and processing:
after the restart every item ends completed exactly once, no prompt runs twice to
completion, and the items that were cut mid-turn are retried after the backoff."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import deploy, make_agent_folder, make_client
from tests.gateway_process import GatewayProcess
from tests.test_queue import logged_events, seconds, wait_until_settled

RETRY_BASE = 1.0
SLOW_AGENT = {"backend": "mock", "mock": {"token_interval_ms": 150, "tokens": 20}}
"""Each turn takes about three seconds: long enough to be cut in the middle."""
QUEUE_ARGS = ("--queue-concurrency", "2", "--queue-retry-base", str(RETRY_BASE))


def started_mid_turn(client: httpx.Client, item: dict) -> bool:
    """Processing, and its turn's first events are in the session's log."""
    if item["status"] != "processing" or item["sessionId"] is None:
        return False
    types = [e["type"] for e in logged_events(client, item["sessionId"])]
    return "text_delta" in types and "done" not in types


def wait_for_kill_point(client: httpx.Client, ids: list[str]) -> dict[str, dict]:
    """Until one item has completed and two are cut mid-turn; the items then."""
    deadline = time.monotonic() + 60
    while True:
        items = {i: client.get(f"/api/queue/{i}").json()["item"] for i in ids}
        done = [i for i, item in items.items() if item["status"] == "completed"]
        mid = [i for i, item in items.items() if started_mid_turn(client, item)]
        if done and len(mid) == 2:
            return items
        assert time.monotonic() < deadline, items
        time.sleep(0.05)


@pytest.mark.timeout(180)
def test_items_cut_by_sigkill_complete_once_after_a_restart_with_backoff(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    gateway = GatewayProcess(data, extra_args=list(QUEUE_ARGS)).start()
    with make_client(gateway) as client:
        deploy(client, "slow", make_agent_folder(tmp_path, "slow", SLOW_AGENT))
        ids = [client.post("/api/queue", json={"agentName": "slow", "prompt": f"job {n}"})
               .json()["item"]["id"] for n in range(5)]
        at_kill = wait_for_kill_point(client, ids)
    gateway.stop(signal.SIGKILL)
    restarted_at = time.time()
    gateway = GatewayProcess(data, extra_args=list(QUEUE_ARGS)).start()
    try:
        with make_client(gateway) as client:
            final = {i: wait_until_settled(client, i, limit=90) for i in ids}
            turns = {i: [e for e in logged_events(client, item["sessionId"])
                         if e["type"] in ("turn_complete", "done")]
                     for i, item in final.items()}
    finally:
        gateway.stop()

    assert {item["status"] for item in final.values()} == {"completed"}
    for item_id, events in turns.items():  # one completed turn per item, never two
        assert [e["type"] for e in events].count("turn_complete") == 1, item_id
        assert [e["data"]["status"] for e in events if e["type"] == "done"] == ["ok"]
    for item_id, before in at_kill.items():
        after = final[item_id]
        if before["status"] == "completed":
            assert after == before  # settled once, untouched by the restart
        elif before["status"] == "processing":
            assert after["retryCount"] == 1 and after["error"] is None
            assert after["sessionId"] == before["sessionId"]  # the cut turn's session
            due = seconds(after["nextAttemptAt"])
            assert restarted_at + RETRY_BASE - 0.01 <= due <= seconds(after["startedAt"])
            assert seconds(after["startedAt"]) < due + 5
        else:
            assert after["retryCount"] == 0
