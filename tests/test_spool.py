"""The local spool as operators meet it: a full spool is counted and logged with the ids lost,
`health` shows what clients hold and since when, and `spool status` / `spool replay` work a
directory left behind by processes that ended."""

from __future__ import annotations

import json
import logging
import time

from campaign_counters import Counters
from campaign_counters.counters import Settings
from campaign_counters.counters.spool import Spool
from campaign_counters.health import spool_health
from cli_helpers import run_cli
from oracle import expected_report, metrics_of
from scenarios import C, OFFER_SCRIPT, T, ev, random_events


def test_a_full_spool_counts_and_logs_the_ids_it_loses(tmp_path, caplog):
    spool = Spool(tmp_path, max_bytes=600)
    events = [ev("sent", f"u{i}", 1, id=f"e{i}") for i in range(10)]
    with caplog.at_level(logging.ERROR, logger="campaign_counters.counters.spool"):
        kept = spool.append(events)
    assert 0 < kept < 10 and spool.overflowed == 10 - kept
    assert spool.status().events == kept and spool.status().overflowed == 10 - kept
    logged = " ".join(r.getMessage() for r in caplog.records)
    for lost in events[kept:]:
        assert repr(lost["id"]) in logged


def test_health_shows_spooled_events_their_age_and_overflow(redis_url, tmp_path):
    """Redis answers but lost its epoch marker: fired events cannot be applied, so they wait in the spool."""
    c = Counters(redis_url, settings=Settings(init_epoch=False, send_timeout=2.0),
                 spool=Spool(tmp_path / "spool", max_bytes=1500))
    for i in range(20):
        c.fire(ev("sent", f"u{i}", 1, id=f"e{i}"))
    assert c.flush(timeout=10)
    deadline = time.monotonic() + 10
    while "spool_waiting" not in c.stats and time.monotonic() < deadline:
        time.sleep(0.05)
    waiting = c.spool.status()
    assert 0 < waiting.events < 20 and waiting.overflowed == 20 - waiting.events
    assert c.stats["spool_waiting"] == waiting.events
    got = spool_health(c)
    assert got["events"] == waiting.events and 0 <= got["oldest_age_s"] <= 15
    assert got["ok"] is False and sum(got["overflowed"].values()) == 20 - waiting.events
    c.close(timeout=1)


def test_spool_status_and_replay_commands_drain_a_directory_exactly(tmp_path):
    home = tmp_path / "home"
    script = tmp_path / "script.json"
    script.write_text(json.dumps(OFFER_SCRIPT))
    assert run_cli(home, "script", "load", "--tenant", T, "--campaign", C, str(script)).returncode == 0
    events = random_events(OFFER_SCRIPT, 300, seed=5, dup_rate=0.1)
    spool_dir = tmp_path / "left-behind"
    for part in (events[: len(events) // 2], events[len(events) // 2:]):  # two processes' files
        Spool(spool_dir).append(part)

    status = run_cli(home, "spool", "status", "--dir", str(spool_dir), "--format", "json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["events"] == len(events)

    replay = run_cli(home, "spool", "replay", "--dir", str(spool_dir), "--format", "json")
    assert replay.returncode == 0, replay.stderr
    out = json.loads(replay.stdout)
    assert out["left"] == 0 and sum(out["outcomes"].values()) == len(events)
    again = run_cli(home, "spool", "replay", "--dir", str(spool_dir), "--format", "json")
    assert json.loads(again.stdout)["outcomes"] == {}  # nothing left: a second replay changes nothing

    report = run_cli(home, "report", "--tenant", T, "--campaign", C, "--format", "json")
    assert metrics_of(json.loads(report.stdout)) == expected_report(events, OFFER_SCRIPT, None)


def test_spool_replay_keeps_what_redis_cannot_take_and_exits_5(tmp_path):
    spool_dir = tmp_path / "left-behind"
    Spool(spool_dir).append([ev("sent", "u1", 1, id="e1")])
    out = run_cli(tmp_path / "home", "spool", "replay", "--dir", str(spool_dir),
                  env={"CAMPAIGN_COUNTERS_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert out.returncode == 5 and "Traceback" not in out.stderr
    assert Spool(spool_dir).status().events == 1


def test_record_safe_never_raises_when_the_spool_cannot_be_written(tmp_path, caplog):
    """Redis unreachable and the spool directory unusable (a file stands where it should be): the event is
    lost, and that is said (outcome, log with the id, overflow count), never raised."""
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    c = Counters("redis://127.0.0.1:1/0", settings=Settings(timeout=0.2), spool=str(blocked / "spool"))
    with caplog.at_level(logging.ERROR, logger="campaign_counters.counters.spool"):
        outcome = c.record_safe(ev("sent", "u1", 1, id="lost-1"))
    assert outcome == "unsent" and c.stats["spooled"] == 0 and c.spool.overflowed == 1
    assert "'lost-1'" in " ".join(r.getMessage() for r in caplog.records)
    c.close(timeout=1)
