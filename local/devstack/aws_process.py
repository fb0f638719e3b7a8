"""moto in a process of its own: the local stack's AWS.

    python -m devstack.aws_process PORT      (started by devstack.server; prints one line, `ready`)

In the local stack's own process, moto's work (every DynamoDB write, stream read and S3 object) shared one
interpreter lock with the API, the handlers and the stream consumer: the whole stack ran on one core, and
the read side reached 15 opened events a second. In a process of its own, moto runs on the second core.

moto is served by waitress, not by moto's own server (werkzeug's development server): that one closes the
connection after every response, so each AWS call paid a new TCP connection and a new thread on both
sides, which was about a third of the local stack's CPU per open. waitress keeps connections alive and
serves them from a fixed pool of threads.

The process ends when its parent does: it reads its standard input until end of file, which comes when
the parent closes the pipe or dies (even by SIGKILL), so no moto server outlives the stack that started it.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from devstack import moto_fidelity, ses_simulator

# How long a thread may hold the interpreter before another that waits gets it (Python's default: 5 ms).
# Both of the local stack's processes mix threads that compute (the stream consumer, a transaction) with
# threads that mostly wait on sockets (every request); each hand-over of a request between threads waited
# up to a whole interval behind a computing one. At 1 ms, the pixel answers faster under load.
SWITCH_INTERVAL = 0.001

# Worker threads: the stack's SQS pollers each hold one in a long poll (WaitTimeSeconds), and the API,
# the pixel and the stream consumer make calls of their own at the same time.
_THREADS = 32


def main() -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from waitress.server import create_server

    port = int(sys.argv[1])
    sys.setswitchinterval(SWITCH_INTERVAL)
    # Ctrl-C reaches the whole process group: the parent decides when AWS goes (it closes the pipe).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("waitress").setLevel(logging.ERROR)  # the stack logs requests
    moto_fidelity.apply()
    ses_simulator.apply()
    try:
        server = create_server(
            DomainDispatcherApplication(create_backend_app),
            host="127.0.0.1",
            port=port,
            threads=_THREADS,
            connection_limit=_THREADS * 4,
            ident="moto",
        )
    except OSError as exc:
        sys.exit(f"moto cannot listen on 127.0.0.1:{port}: {exc.strerror}")
    threading.Thread(target=server.run, name="moto", daemon=True).start()
    print("ready", flush=True)
    try:
        while sys.stdin.buffer.read(65536):
            pass
    finally:
        server.close()


if __name__ == "__main__":
    main()
