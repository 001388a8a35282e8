"""What `fer-dist submit --wait` shows: new log lines only, progress lines only."""
from __future__ import annotations

from fer_dist.launch.follow import LogTail, is_progress_line


def test_log_tail_returns_each_complete_line_once(tmp_path):
    log = tmp_path / "0_log.out"
    tail = LogTail(log)
    assert tail.new_lines() == []                        # not created yet: the job is pending
    log.write_text("agent: node 1/1\nepoch 1/3  lr 0.1")
    assert tail.new_lines() == ["agent: node 1/1"]
    with log.open("a") as fh:
        fh.write("  train loss 1.0\r\n\nepoch 2/3\n")
    assert tail.new_lines() == ["epoch 1/3  lr 0.1  train loss 1.0", "epoch 2/3"]
    assert tail.new_lines() == []


def test_progress_lines_exclude_submitit_chatter_and_the_final_table():
    assert is_progress_line("epoch 2/3  lr 0.1  train loss 1.9 acc 0.2")
    assert is_progress_line("submitit WARNING (2026-01-01 00:00:00,000) - Caught signal SIGUSR2")
    assert not is_progress_line("submitit INFO (2026-01-01 00:00:00,000) - Starting with ...")
    assert not is_progress_line("                 demo: final metrics                 ")
    assert not is_progress_line("│ test (last)        │   0.2000 │")
