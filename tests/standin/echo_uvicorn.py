"""An upstream in uvicorn (run with `--http httptools` or `--http h11`) that answers every
request with the path it routes (scope["path"], as Starlette/FastAPI route on it) and the
credential it received. `/slow` answers after 60 s (a request still in flight)."""

from __future__ import annotations

import asyncio
import json


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # drain the body
        message = await receive()
        more = message.get("more_body", False)
    if scope["path"] == "/slow":
        await asyncio.sleep(60)
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    body = json.dumps({"server": "uvicorn", "routed": [scope["path"]],
                       "authorization": headers.get("authorization"),
                       "host": headers.get("host")}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
