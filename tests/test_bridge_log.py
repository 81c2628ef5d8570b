"""Reading a bridge log back (`runner/bridge_log.py`): the file is the sandbox's bytes, and
its name may have been swapped for something else."""

from __future__ import annotations

import os
import time
from pathlib import Path

from runner.bridge_log import ANSWER_CAP, LINE_CAP, MAX_LINES, READ_CAP, read_log


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_lines_are_numbered_from_zero_and_page_with_after(tmp_path: Path) -> None:
    log = write(tmp_path / "bridge.log", b"a\nb\r\nc\n")
    assert [(line.index, line.text) for line in read_log(log).lines] == [
        (0, "a"), (1, "b"), (2, "c")]
    assert [line.text for line in read_log(log, after=0).lines] == ["b", "c"]
    assert [line.text for line in read_log(log, after=0, limit=1).lines] == ["b"]
    assert read_log(log, after=2).lines == []


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    secret = write(tmp_path / "secret", b"host secret\n")
    (tmp_path / "bridge.log").symlink_to(secret)
    assert read_log(tmp_path / "bridge.log").lines == []


def test_a_fifo_or_a_directory_is_no_log(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    assert read_log(tmp_path / "fifo").lines == []
    assert read_log(tmp_path / "dir").lines == []
    assert read_log(tmp_path / "missing").lines == []


def test_reads_and_answers_are_bounded(tmp_path: Path) -> None:
    log = write(tmp_path / "bridge.log", b"y\n" * (READ_CAP // 2 + 10))
    page = read_log(log)
    assert len(page.lines) == MAX_LINES
    assert read_log(log, after=READ_CAP // 2 - 2).lines[-1].index == READ_CAP // 2 - 1
    assert read_log(log, after=READ_CAP // 2 - 1).lines == []


def test_an_answer_holds_at_most_a_mebibyte_of_lines(tmp_path: Path) -> None:
    log = write(tmp_path / "bridge.log", (b"z" * (LINE_CAP - 1) + b"\n") * 600)
    page = read_log(log)
    assert ANSWER_CAP <= sum(len(line.text) for line in page.lines) < ANSWER_CAP + LINE_CAP
    assert read_log(log, after=page.lines[-1].index).lines[0].index == len(page.lines)


def test_a_flood_of_empty_lines_pages_quickly(tmp_path: Path) -> None:
    log = write(tmp_path / "bridge.log", b"\n" * READ_CAP)
    started = time.monotonic()
    assert read_log(log, after=READ_CAP - 3).lines[-1].index == READ_CAP - 1
    assert time.monotonic() - started < 1.0
