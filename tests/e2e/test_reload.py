"""mitmproxy reloads a `-s` script when its file changes (a `git pull` under traffic).

The reload must not finish in-flight requests as if the proxy were stopping, must not
re-register Prometheus collectors or rebind the metrics port, and the reloaded addon
must settle what the old one admitted. The test loads seatbelt through a one-line
wrapper script in a temp dir, so touching it re-executes seatbelt/addon.py exactly as
a change to that file would, without touching the repository.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    ADDON,
    Key,
    Proxy,
    chat,
    openai_client,
    policy_text,
    tag,
    wait_for,
)
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

KEY = Key("reload-key", cap=100_000)

WRAPPER = """\
# Re-executes the real addon file on every (re)load, as mitmproxy does with a -s script.
__file__ = {addon!r}
exec(compile(open(__file__).read(), __file__, "exec"))
"""


def test_script_reload_keeps_in_flight_requests_and_metrics(
    tmp_path: Path, standin: StandIn
) -> None:
    script = tmp_path / "seatbelt_entry.py"
    script.write_text(WRAPPER.format(addon=str(ADDON)))
    proxy = Proxy(tmp_path / "proxy", policy_text([KEY]), upstream=standin.url, script=script)
    proxy.start()
    t = tag()
    try:
        result: dict[str, object] = {}

        def slow_stream() -> None:
            chunks = list(openai_client(proxy, KEY).chat.completions.create(
                **chat(f"{t} #slow:150 #len:20", max_tokens=40), stream=True))
            result["chunks"] = len(chunks)

        worker = threading.Thread(target=slow_stream)
        worker.start()
        wait_for("the stream to reach the upstream", lambda: standin.received(t) or None)
        loads = proxy.log().count("Loading script")
        future = time.time() + 5
        os.utime(script, (future, future))  # mitmproxy polls the mtime once a second
        wait_for("the script to reload", lambda: proxy.log().count("Loading script") > loads,
                 timeout=20)
        worker.join(timeout=60)
        assert result.get("chunks", 0) > 0, "the in-flight stream broke on reload"

        (line,) = proxy.wait_audit(KEY.id, 1)
        (upstream,) = standin.received(t)
        assert (line["usage_source"], line["outcome"]) == ("reported", "served"), line
        assert line["prompt_tokens"] + line["completion_tokens"] == upstream.spend
        assert proxy.row(KEY.id)["reserved"] == 0 and proxy.row(KEY.id)["spent"] == upstream.spend

        # The reloaded addon admits and meters new requests; metrics still served, not reset.
        openai_client(proxy, KEY).chat.completions.create(**chat(f"{t} after", max_tokens=5))
        lines = proxy.wait_audit(KEY.id, 2)
        assert lines[-1]["outcome"] == "served"
        metrics = proxy.metrics()
        served = metrics.value("seatbelt_requests_total", account=KEY.account, key=KEY.id,
                               outcome="served")
        assert served == 2
        log = proxy.log()
        assert "Duplicated timeseries" not in log and "Address already in use" not in log
        assert "Traceback" not in log
    finally:
        proxy.stop()
