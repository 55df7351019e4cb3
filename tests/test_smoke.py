async def test_record_and_report_roundtrip(api):
    await api.load_script("t1", "c1", {"nodes": [{"id": "a", "type": "start"}, {"id": "b"}], "edges": [{"source": "a", "target": "b"}]})
    res = await api.record_many([{"type": "sent", "tenant": "t1", "campaign": "c1", "job": "j", "user": "u", "ts": 1}])
    assert res.accepted == 1
    rep = await api.report("t1", "c1")
    assert rep["sent_users_count"] == 1
