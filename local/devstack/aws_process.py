"""moto in a process of its own: the local stack's AWS.

    python -m devstack.aws_process PORT      (started by devstack.server; prints one line, `ready`)

In the local stack's own process, moto's work (every DynamoDB write, stream read and S3 object) shared one
interpreter lock with the API, the handlers and the stream consumer: the whole stack ran on one core, and
the read side reached 15 opened events a second. In a process of its own, moto runs on the second core.

The process ends when its parent does: it reads its standard input until end of file, which comes when
the parent closes the pipe or dies (even by SIGKILL), so no moto server outlives the stack that started it.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys

from devstack import moto_fidelity


def main() -> None:
    from moto.server import ThreadedMotoServer

    port = int(sys.argv[1])
    # Ctrl-C reaches the whole process group: the parent decides when AWS goes (it closes the pipe).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every call; the stack logs requests
    moto_fidelity.apply()
    # ThreadedMotoServer.start() waits forever when its thread cannot bind: find out first, and end.
    try:
        socket.create_server(("127.0.0.1", port)).close()
    except OSError as exc:
        sys.exit(f"moto cannot listen on 127.0.0.1:{port}: {exc.strerror}")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print("ready", flush=True)
    try:
        while sys.stdin.buffer.read(65536):
            pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
