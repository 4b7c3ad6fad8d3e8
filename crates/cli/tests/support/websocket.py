"""A WebSocket echo server and client for crates/cli/tests/websocket.rs, with the `websockets`
package (an independent WebSocket implementation: the handshake, the framing and the closing
handshake are its own). Every line it prints is one JSON object.

    websocket.py server               echo server on 127.0.0.1:0; prints {"event": "listening",
                                      "port": P}, then {"event": "open"|"closed", ...} per
                                      connection. Path /close: the server closes at once with
                                      1000 "server says bye".
    websocket.py echo URL TOKEN       sends a text, a binary and a 1.5 MiB binary message, checks
                                      each echo, closes; prints {"echoed": [...], "close": code}
    websocket.py status URL [TOKEN]   a handshake expected to be refused; prints its status,
                                      www-authenticate and body
    websocket.py hold URL TOKEN       opens, prints {"event": "open"}, waits for a line on stdin,
                                      closes; prints {"event": "closed", "code": ...}
    websocket.py until-closed URL TOKEN  waits for the server to close; prints the close frame
"""

import asyncio
import json
import os
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, InvalidStatus


def out(**fields):
    print(json.dumps(fields), flush=True)


async def server():
    async def handler(ws):
        path = ws.request.path
        out(event="open", path=path)
        if path == "/close":
            await ws.close(1000, "server says bye")
        else:
            try:
                async for message in ws:
                    await ws.send(message)
            except ConnectionClosed:
                pass
        await ws.wait_closed()
        out(event="closed", path=path, code=ws.close_code, reason=ws.close_reason)

    async with serve(handler, "127.0.0.1", 0, max_size=None, ping_interval=None) as s:
        out(event="listening", port=s.sockets[0].getsockname()[1])
        await asyncio.Future()


def headers(token):
    return {"Authorization": f"Bearer {token}"} if token else {}


async def echo(url, token):
    messages = ["hello, tunnel", bytes(range(256)) * 4, os.urandom(3 * 512 * 1024)]
    echoed = []
    async with connect(url, additional_headers=headers(token), max_size=None, ping_interval=None) as ws:
        for m in messages:
            await ws.send(m)
            got = await ws.recv()
            assert type(got) is type(m) and got == m, f"echo of a {type(m).__name__} of {len(m)} differs"
            echoed.append({"type": type(m).__name__, "len": len(m)})
    out(echoed=echoed, close=ws.close_code)


async def status(url, token=None):
    try:
        async with connect(url, additional_headers=headers(token), ping_interval=None):
            out(status=101)
    except InvalidStatus as e:
        r = e.response
        out(status=r.status_code, www_authenticate=r.headers.get("www-authenticate"),
            body=r.body.decode(errors="replace"))


async def hold(url, token):
    async with connect(url, additional_headers=headers(token), ping_interval=None) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
        out(event="open")
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    out(event="closed", code=ws.close_code)


async def until_closed(url, token):
    async with connect(url, additional_headers=headers(token), ping_interval=None) as ws:
        try:
            await ws.recv()
        except ConnectionClosed as e:
            out(code=e.rcvd.code if e.rcvd else None, reason=e.rcvd.reason if e.rcvd else None)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    asyncio.run({"server": server, "echo": echo, "status": status, "hold": hold,
                 "until-closed": until_closed}[cmd](*args))
