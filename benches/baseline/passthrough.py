"""The bare pass-through baseline: Granian RSGI + aiohttp forwarding bodies unchanged, no logic at all.

It is what DESIGN.md's table calls "Granian RSGI + aiohttp client"; the harness runs it beside Ensemble
so Ensemble's cost is read as a ratio to the cheapest Python proxy on the same machine, same run.
Upstream: env PASSTHROUGH_UPSTREAM (e.g. http://127.0.0.1:9001).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp


class Passthrough:
    def __init__(self) -> None:
        self.upstream = os.environ["PASSTHROUGH_UPSTREAM"].rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        async def start() -> None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

        loop.run_until_complete(start())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.session is not None:
            loop.run_until_complete(self.session.close())

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        assert self.session is not None
        body = await proto()
        headers = {
            "content-type": "application/json",
            "authorization": scope.headers.get("authorization", ""),
        }
        async with self.session.post(self.upstream + scope.path, data=body, headers=headers) as resp:
            ctype = resp.headers.get("content-type", "application/json")
            if ctype.startswith("text/event-stream"):
                transport = proto.response_stream(resp.status, [("content-type", ctype)])
                async for chunk in resp.content.iter_any():
                    await transport.send_bytes(chunk)
            else:
                proto.response_bytes(resp.status, [("content-type", ctype)], await resp.read())


app = Passthrough()
