"""A python-socketio server for bench/fanout.py: every client joins room "r";
POST /publish?n=N&size=S emits N messages of S bytes to the room."""

import asyncio
import sys

import socketio
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp", transports=["websocket"], ping_interval=60, ping_timeout=60)
app = web.Application()
sio.attach(app)


@sio.event
async def connect(sid, environ):
    await sio.enter_room(sid, "r")


async def publish(request: web.Request) -> web.Response:
    payload = {"pad": "x" * int(request.query["size"])}
    for i in range(int(request.query["n"])):
        await sio.emit("msg", payload, room="r")
        if i % 20 == 19:
            await asyncio.sleep(0)
    return web.Response(text="ok")


app.router.add_post("/publish", publish)
print("ready", flush=True)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
