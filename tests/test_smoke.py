async def test_record_and_report_roundtrip(api):
    await api.load_script("t1", "c1", {"nodes": [{"id": "a", "type": "start"}, {"id": "b"}], "edges": [{"source": "a", "target": "b"}]})
    res = await api.record_many([{"type": "sent", "tenant": "t1", "campaign": "c1", "job": "j", "user": "u", "ts": 1}])
    assert res.accepted == 1
    rep = await api.report("t1", "c1")
    assert rep["sent_users_count"] == 1


def test_script_cache_is_bounded_expires_and_checks_the_sha():
    from campaign_counters.script import ScriptCache, parse_script

    now = [0.0]
    cache = ScriptCache(maxsize=2, ttl=10, clock=lambda: now[0])
    g1 = parse_script({"nodes": [{"id": "a", "type": "start"}]})
    g2 = parse_script({"nodes": [{"id": "b", "type": "start"}]})
    cache.put("c1", g1)
    cache.put("c2", g2)
    assert cache.get("c1", g1.sha) is g1
    assert cache.get("c1", g2.sha) is None  # reloaded elsewhere: a different sha drops the entry
    cache.put("c1", g1)
    cache.put("c3", g1)
    assert len(cache) == 2 and cache.get("c2") is None  # least recently used went first
    now[0] = 11
    assert cache.get("c1") is None  # expired


def test_noscript_fallback_after_a_script_flush(redis_url, raw):
    from campaign_counters import Counters

    c = Counters(redis_url)
    c.record({"type": "sent", "tenant": "t1", "campaign": "c1", "job": "j", "user": "u1", "ts": 1})
    raw.script_flush()
    assert c.record({"type": "sent", "tenant": "t1", "campaign": "c1", "job": "j", "user": "u2", "ts": 1}) == "applied"
    assert c.report("t1", "c1")["sent_users_count"] == 2


def test_tenant_timezone_from_the_cli(cli, redis_url):
    res = cli("tenant", "set-tz", "--tenant", "t1", "--tz", "Europe/Berlin")
    assert res.exit_code == 0
    res = cli("tenant", "set-tz", "--tenant", "t1", "--tz", "Mars/Olympus")
    assert res.exit_code == 2 and "tz: unknown timezone" in res.stderr
