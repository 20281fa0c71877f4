"""A toy API family, defined in the test suite (tests/e2e/test_registered_family.py): a
module of its own, importing no test tool, so a mitmdump that has no pytest can load it."""

from __future__ import annotations

from typing import Any, Mapping

from seatbelt.apis import base
from seatbelt.apis.base import ApiFamily, RequestFacts, Route, UsageReader


class ToyReader(UsageReader):
    def feed(self, obj: Any) -> None:
        usage = obj.get("usage") if isinstance(obj, dict) else None
        if isinstance(usage, dict):
            self.usage.prompt_tokens = base.count(usage.get("prompt_tokens"))
            self.usage.completion_tokens = base.count(usage.get("completion_tokens"))


class Toy(ApiFamily):
    """`POST /toy/.../completions`, spoken like OpenAI's legacy completions (which the
    stand-in answers for any path prefix); a shape OpenAI would otherwise take."""

    name = "toy"

    def route(self, method: str, path: str, headers: Mapping[str, str]) -> Route | None:
        if method == "POST" and path.startswith("/toy/") and path.endswith("/completions"):
            return Route(self, "toy", "completions", "metered")
        return None

    def parse_request(self, route: Route, body: dict[str, Any]) -> RequestFacts:
        limit = body.get("max_tokens")
        if limit is not None and base.count(limit) is None:
            raise base.BadRequestBody("max_tokens must be a non-negative integer")
        return RequestFacts(model=body.get("model"), stream=bool(body.get("stream")),
                            max_output=limit)

    def write_limit(self, route: Route, body: dict[str, Any], limit: int) -> None:
        body["max_tokens"] = limit

    def framing(self, route: Route, facts: RequestFacts, content_type: str) -> base.Framing:
        return "sse" if "event-stream" in content_type else "json"

    def new_usage_reader(self, route: Route) -> UsageReader:
        return ToyReader()

    def error_body(self, error: base.ErrorShape) -> dict[str, Any]:
        return {"error": {"message": error.message, "type": error.code}}
