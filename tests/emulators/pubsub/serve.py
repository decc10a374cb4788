"""cloudbox's Pub/Sub emulator alone, on ports the system picks, for one test.

`cloudbox` itself starts ten services on fixed ports (8085, 8086, 4443, ...),
so two tests, or a developer's own cloudbox, would collide. This starts only
its Pub/Sub servers, both in this process and so over the same state: gRPC
(what the official clients speak, and what PUBSUB_EMULATOR_HOST names) and
REST (the admin and pull calls of the tests). Both listen on 127.0.0.1 port 0
and, once they accept connections, one JSON line on stdout says where:

    {"grpc": "127.0.0.1:PORT", "rest": "http://127.0.0.1:PORT"}

It stops when stdin closes, so a test that dies or forgets leaves nothing
running, and on SIGTERM/SIGINT. State is in memory only.

Run with the interpreter `make pubsub-emulator` prepares (the patched, pinned
cloudbox): .emulators/pubsub/bin/python tests/emulators/pubsub/serve.py
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys

import grpc.aio
import uvicorn

from cloudbox.services.pubsub.app import app as rest_app

# cloudbox's own create_server binds the port it is given and drops the
# number grpc answers, so port 0 would leave us guessing: the handler is
# attached here instead (a private name, stable in the pinned release).
from cloudbox.services.pubsub.grpc_server import _PubSubRpcHandler

HOST = "127.0.0.1"


async def stdin_closed() -> None:
    """Returns when the parent closes our stdin (or dies)."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.buffer.read)


async def serve() -> None:
    level = os.environ.get("CLOUDBOX_LOG_LEVEL", "warning").upper()
    logging.basicConfig(level=getattr(logging, level, logging.WARNING), stream=sys.stderr)

    grpc_server = grpc.aio.server()
    grpc_server.add_generic_rpc_handlers([_PubSubRpcHandler()])
    grpc_port = grpc_server.add_insecure_port(f"{HOST}:0")
    await grpc_server.start()

    rest_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    rest_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    rest_socket.bind((HOST, 0))
    rest_port = rest_socket.getsockname()[1]
    config = uvicorn.Config(rest_app, log_level=level.lower(), access_log=False, lifespan="off")
    rest_server = uvicorn.Server(config)
    rest_task = asyncio.create_task(rest_server.serve(sockets=[rest_socket]))
    while not rest_server.started:
        if rest_task.done():
            rest_task.result()
            raise SystemExit("serve.py: the REST server stopped before it started")
        await asyncio.sleep(0.01)

    print(json.dumps({"grpc": f"{HOST}:{grpc_port}", "rest": f"http://{HOST}:{rest_port}"}), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watcher = asyncio.create_task(stdin_closed())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([watcher, stopper, rest_task], return_when=asyncio.FIRST_COMPLETED)

    rest_server.should_exit = True
    await grpc_server.stop(grace=0.5)
    await asyncio.wait_for(rest_task, timeout=2)
    # The stdin reader thread may still block; exit without waiting for it.
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(serve())
