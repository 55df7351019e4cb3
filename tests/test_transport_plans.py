"""The transport's plans, driven by hand without a Redis server (as h11 tests its state machine).

Each test plays the driver: it receives what the plan asks for and sends back
replies, errors included, so retries on NOSCRIPT, MOVED, ASK and TRYAGAIN
and the handling of connection errors are checked in milliseconds.
"""

from __future__ import annotations

import pytest
from redis.exceptions import AskError, ConnectionError, MovedError, NoScriptError, TryAgainError

from campaign_counters.counters.keys import slot_of
from campaign_counters.counters.transport import (
    Batches, Cmd, LuaScript, Receive, RefreshTopology, Router, Send, call, execute, on_every_node,
    receive_streamed, send_streamed,
)

SCRIPT = LuaScript("probe.lua", "return 1")
A, B = ("127.0.0.1", 7000), ("127.0.0.1", 7001)


def finish(plan, reply):
    """Send the last reply; return what the plan returned."""
    with pytest.raises(StopIteration) as done:
        plan.send(reply)
    return done.value.value


def slots_reply(owner_of_all):
    return [[0, 16383, [owner_of_all[0].encode(), owner_of_all[1]]]]


def test_a_plain_batch_is_asked_for_once_and_its_replies_returned_in_order():
    plan = execute(Router(), [Cmd(None, ("GET", "k")), Cmd(None, ("GET", "j"))])
    assert next(plan) == Batches({None: [("GET", "k"), ("GET", "j")]})
    assert finish(plan, {None: [b"v", None]}) == [b"v", None]


def test_noscript_loads_the_script_then_runs_only_that_command_again():
    cmds = [Cmd("c", ("EVALSHA", SCRIPT.sha, 0), SCRIPT), Cmd("c", ("GET", "k"))]
    plan = execute(Router(), cmds)
    next(plan)
    load = plan.send({None: [NoScriptError("NOSCRIPT"), b"v"]})
    assert load == Batches({None: [("SCRIPT", "LOAD", SCRIPT.source)]})
    again = plan.send({None: [SCRIPT.sha.encode()]})
    assert again == Batches({None: [("EVALSHA", SCRIPT.sha, 0)]})
    assert finish(plan, {None: [1]}) == [1, b"v"]


def test_a_failed_script_load_raises():
    plan = execute(Router(), [Cmd("c", ("EVALSHA", SCRIPT.sha, 0), SCRIPT)])
    next(plan)
    plan.send({None: [NoScriptError("NOSCRIPT")]})
    with pytest.raises(ConnectionError):
        plan.send({None: [ConnectionError("lost")]})


def test_on_a_cluster_the_plan_asks_for_the_topology_first_and_groups_by_node():
    router = Router(cluster=True)
    plan = execute(router, [Cmd("camp", ("GET", "k"))])
    assert isinstance(next(plan), RefreshTopology)
    batch = plan.send(slots_reply(A))
    assert batch == Batches({A: [("GET", "k")]})
    assert finish(plan, {A: [b"v"]}) == [b"v"]


@pytest.mark.parametrize("redirect", [MovedError, AskError, TryAgainError])
def test_a_redirect_refreshes_the_topology_and_retries_on_the_new_node(redirect):
    router = Router(cluster=True)
    router.update(slots_reply(A))
    slot = slot_of("camp")
    plan = execute(router, [Cmd("camp", ("GET", "k")), Cmd("camp", ("GET", "j"))])
    assert next(plan) == Batches({A: [("GET", "k"), ("GET", "j")]})
    error = redirect(f"{slot} {B[0]}:{B[1]}") if redirect is not TryAgainError else redirect("TRYAGAIN")
    assert isinstance(plan.send({A: [error, b"j"]}), RefreshTopology)
    assert plan.send(slots_reply(B)) == Batches({B: [("GET", "k")]})
    assert finish(plan, {B: [b"k"]}) == [b"k", b"j"]


def test_endless_redirects_give_up_with_an_error_in_place():
    router = Router(cluster=True)
    router.update(slots_reply(A))
    plan = execute(router, [Cmd("camp", ("GET", "k"))], attempts=2)
    next(plan)
    plan.send({A: [MovedError(f"{slot_of('camp')} 127.0.0.1:7000")]})
    plan.send(slots_reply(A))
    (result,) = finish(plan, {A: [MovedError(f"{slot_of('camp')} 127.0.0.1:7000")]})
    assert "gave up" in str(result)


def test_a_connection_error_reply_is_returned_not_retried():
    """It may have run: retrying could apply an event twice."""
    plan = execute(Router(), [Cmd("c", ("EVALSHA", SCRIPT.sha, 0), SCRIPT)])
    next(plan)
    (result,) = finish(plan, {None: [ConnectionError("reset by peer")]})
    assert isinstance(result, ConnectionError)


def test_call_raises_the_first_error():
    plan = call(Router(), [Cmd(None, ("GET", "k")), Cmd(None, ("GET", "j"))])
    next(plan)
    with pytest.raises(ConnectionError):
        plan.send({None: [b"v", ConnectionError("lost")]})


def test_an_error_thrown_in_by_the_driver_ends_the_plan():
    plan = execute(Router(), [Cmd(None, ("GET", "k"))])
    next(plan)
    with pytest.raises(ConnectionError):
        plan.throw(ConnectionError("connect timed out"))


def test_streamed_commands_are_written_one_by_one_and_read_once():
    router = Router()
    cmds = [Cmd("c", ("EVALSHA", SCRIPT.sha, 0), SCRIPT), Cmd("c", ("GET", "k"))]
    send = send_streamed(router, iter(cmds))
    assert next(send) == Send({None: [("EVALSHA", SCRIPT.sha, 0)]})
    assert send.send(None) == Send({None: [("GET", "k")]})
    streamed = finish(send, None)
    receive = receive_streamed(router, streamed)
    assert isinstance(next(receive), Receive)
    # the script was not loaded: it alone goes through execute's NOSCRIPT path
    assert receive.send({None: [NoScriptError("NOSCRIPT"), b"v"]}) == Batches({None: [("EVALSHA", SCRIPT.sha, 0)]})
    assert receive.send({None: [NoScriptError("NOSCRIPT")]}) == Batches({None: [("SCRIPT", "LOAD", SCRIPT.source)]})
    assert receive.send({None: [b"sha"]}) == Batches({None: [("EVALSHA", SCRIPT.sha, 0)]})
    assert finish(receive, {None: [1]}) == [1, b"v"]


def test_a_streamed_connection_error_stays_in_place():
    router = Router()
    send = send_streamed(router, iter([Cmd("c", ("GET", "k")), Cmd("c", ("GET", "j"))]))
    next(send)
    send.send(None)
    streamed = finish(send, None)
    receive = receive_streamed(router, streamed)
    next(receive)
    lost = ConnectionError("lost")
    assert finish(receive, {None: [b"k", lost]}) == [b"k", lost]


def test_on_every_node_asks_each_cluster_master_once():
    plan = on_every_node(Router(cluster=True), ("INFO", "memory"))
    assert next(plan) == RefreshTopology()
    two = [[0, 8191, [b"127.0.0.1", 7000]], [8192, 16383, [b"127.0.0.1", 7001]]]
    assert plan.send(two) == Batches({A: [("INFO", "memory")], B: [("INFO", "memory")]})
    assert finish(plan, {A: [b"a"], B: [b"b"]}) == [b"a", b"b"]


def test_a_dashboard_series_gets_no_entry_when_the_figures_did_not_change():
    from campaign_counters.counters.core import CountersCore
    from campaign_counters.counters.dashboard import SeriesCap, append_if_changed

    core = CountersCore(cluster=False)
    cap = SeriesCap(entries=5, days=1)
    plan = append_if_changed(core, "c", {"s1": {"n": "1"}, "s2": {"n": "2"}}, cap, now_ms=90_000_000)
    assert next(plan) == Batches({None: [("XREVRANGE", "s1", "+", "-", "COUNT", 1),
                                         ("XREVRANGE", "s2", "+", "-", "COUNT", 1)]})
    last = [[b"1-0", [b"n", b"1"]]]  # s1 ends with the same figures; s2 is empty
    assert plan.send({None: [last, []]}) == Batches({None: [
        ("XTRIM", "s1", "MINID", 90_000_000 - 86_400_000),
        ("XADD", "s2", "MAXLEN", 5, "*", "n", "2"), ("XTRIM", "s2", "MINID", 90_000_000 - 86_400_000)]})
    assert finish(plan, {None: [0, b"2-0", 0]}) == ["s2"]


def test_a_report_reads_its_counters_in_one_transaction_and_again_when_it_aborted():
    """Job counters and campaign corrections are read together (MULTI/EXEC); an aborted EXEC (a slot
    moved while queuing) is tried again after the routes were refreshed."""
    from redis.exceptions import ExecAbortError

    from campaign_counters.counters.core import CountersCore

    core = CountersCore(cluster=False)
    k = core.keys
    plan = core.plan_report("t", "c", "j")
    assert next(plan) == Batches({None: [("HGETALL", k.meta("c"))]})
    meta = [b"tenant", b"t", b"j:j", b"1"]
    tx = [("MULTI",), ("HGETALL", k.meta("c")), ("HGETALL", k.counters("c")), ("HGETALL", k.names("c")),
          ("HGETALL", k.counters("c", "j")), ("EXEC",)]
    assert plan.send({None: [meta]}) == Batches({None: tx})
    queued = [b"OK"] + [b"QUEUED"] * 4
    assert plan.send({None: [*queued, ExecAbortError("EXECABORT")]}) == Batches({None: tx})
    counters = [b"target", b"2", b"sent", b"1"]
    report = finish(plan, {None: [*queued, [meta, [], [], counters]]})
    assert (report["job"], report["target_users_count"], report["sent_users_count"]) == ("j", 2, 1)
