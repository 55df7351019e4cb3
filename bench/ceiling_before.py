"""redis-benchmark arguments for record.lua as it was before the chat-path work (commit b0d3f43).

Run by bench_chat.py with PYTHONPATH pointing at that commit's `src`, so
the old single-event ceiling is measured in the same run as today's:

    PYTHONPATH=/tmp/old/src python bench/ceiling_before.py PORT CAMPAIGN

Loads the campaign's script and record.lua with the old code, builds one
call per event type with the old encoder (`records.record_call`, 14 values
per event, the id as a key name), checks that a call applies its event,
and prints {type: [argument, ...]} (hex) as JSON. Uses only what that
commit's package had.
"""

from __future__ import annotations

import json
import os
import sys

import msgpack
import redis

sys.path.insert(0, os.path.dirname(__file__))

from common import SCRIPT, TENANT  # noqa: E402

from campaign_counters import Counters  # noqa: E402
from campaign_counters.counters.records import record_call  # noqa: E402
from campaign_counters.events import parse_event  # noqa: E402

OLD_WIDTH = 14  # values per event in the old layout
NUL_FREE_TS = 0x01010101  # as bench_chat.py: all msgpack bytes non-zero


def main() -> None:
    port, campaign = int(sys.argv[1]), sys.argv[2]
    url = f"redis://127.0.0.1:{port}/0"
    c = Counters(url)
    c.load_script(TENANT, campaign, SCRIPT)
    c.record({"type": "sent", "tenant": TENANT, "campaign": campaign, "job": "run-1", "user": "warm", "ts": 1})
    c.run(c.plan_timezone(TENANT))
    r = redis.Redis(port=port)
    samples = {"targeted": {"type": "targeted"}, "sent": {"type": "sent"},
               "interaction": {"type": "interaction", "target": "q_budget", "choice": "yes"}}
    out = {}
    for k, (name, extra) in enumerate(samples.items()):
        ev = parse_event({"tenant": TENANT, "campaign": campaign, "job": "run-1", "user": "USER", "ts": 1_764_000_000,
                          "id": "EVID", **extra})
        cmd = record_call(c.keys, campaign, [ev], c.local_day, c.settings.id_ttl, c.settings.journal, {}, set())
        *head, blob = cmd.args
        values = msgpack.unpackb(blob)
        values[4] = NUL_FREE_TS

        def sub(v: str) -> str:
            return v.replace("USER", "u:__rand_int__").replace("EVID", "e:__rand_int__")

        values = [sub(v) if isinstance(v, str) else v for v in values]
        args = [sub(str(a)).encode() for a in head] + [msgpack.packb(values)]
        if any(b"\0" in a for a in args):
            raise SystemExit("an argument holds a zero byte: redis-benchmark cannot pass it")
        r.script_load(cmd.script.source)
        reply = r.execute_command(*(a.replace(b"__rand_int__", b"%012d" % (k + 1)) for a in args))
        if reply[0] != 1:
            raise SystemExit(f"the old record.lua call does not apply its event: {reply!r}")
        out[name] = [a.hex() for a in args]
    c.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
