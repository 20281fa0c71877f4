"""An API family defined here, in the test suite, registered with seatbelt.apis.register()
by an extra `-s` script, and metered end to end through a real mitmdump: adding a family
needs one module and one registration, nothing in seatbelt itself (issue 12)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from seatbelt import apis
from tests.e2e.conftest import REPO, Key, Proxy, http_module, policy_text, tag
from tests.e2e.toy_family import Toy
from tests.standin import StandIn

pytestmark = pytest.mark.e2e

TOY, TOY_CAP = Key("toy"), Key("toy-cap", cap=5)


def script(directory: Path) -> Path:
    """The extra `-s` script: registers Toy before any request is routed."""
    path = directory / "register_toy.py"
    path.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from seatbelt.apis import register\n"
        "from tests.e2e.toy_family import Toy\n"
        "register(Toy())\n"
    )
    return path


@pytest.fixture(scope="module")
def proxy(proxy_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Proxy:
    extra = ["-s", str(script(tmp_path_factory.mktemp("toy-script")))]
    return proxy_factory("toy", policy_text([TOY, TOY_CAP]), extra_args=extra)


def post(proxy: Proxy, key: Key, body: dict[str, Any]) -> Any:
    return http_module().post(proxy.url + "/toy/v1/completions", json=body, timeout=30,
                              headers={"authorization": f"Bearer {key.credential}"})


@pytest.mark.parametrize("stream", [False, True])
def test_a_family_registered_from_the_test_suite_is_metered_end_to_end(
    proxy: Proxy, standin: StandIn, stream: bool
) -> None:
    t = tag()
    body: dict[str, Any] = {"model": "toy-1", "prompt": f"{t} #len:7", "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    r = post(proxy, TOY, body)
    assert r.status_code == 200, r.text
    (up,) = standin.received(t)
    assert up.usage_reported and up.usage is not None
    assert up.json["max_tokens"] == 4096  # the toy's write_limit named the reserved limit
    line = [x for x in proxy.wait_audit(TOY.id, 1 + stream) if x["path"].startswith("/toy/")
            and x["stream"] == stream][0]
    assert (line["provider"], line["usage_source"], line["outcome"]) == (
        "toy", "reported", "served"), line
    assert line["prompt_tokens"] == up.usage["prompt_tokens"]
    assert line["completion_tokens"] == up.usage["completion_tokens"]


def test_a_registered_family_refuses_in_its_own_shape(proxy: Proxy) -> None:
    r = post(proxy, TOY_CAP, {"model": "toy-1", "prompt": "hi", "max_tokens": 100})
    assert r.status_code == 429, r.text
    assert r.json()["error"]["type"] == "insufficient_quota"
    assert set(r.json()) == {"error"}  # Toy.error_body, not OpenAI's shape


def test_a_family_whose_credential_redaction_would_miss_is_refused() -> None:
    class Leaky(Toy):
        credential_headers = ("x-toy-key",)  # not a place redaction scrubs

    before = apis.FAMILIES
    with pytest.raises(ValueError, match="x-toy-key"):
        apis.register(Leaky())
    assert apis.FAMILIES is before
