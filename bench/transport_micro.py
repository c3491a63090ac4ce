"""Client CPU per streamed SSE event: httpx's stock transport vs TrioH11Transport.

Not part of the test suite. Usage::

    python bench/transport_micro.py                  # default matrix
    python bench/transport_micro.py --concurrency 1 200 --events 200 --streams 400
    python bench/transport_micro.py --pace-ms 20     # paced streams (one event per wake-up)
    python bench/transport_micro.py --tls --only TrioH11Transport   # HTTPS upstream, one TLS
                                                    # record per event (as Copilot sends)

A fast upstream runs in a child process (so its CPU is not counted). It
answers every request with a chunked SSE stream of ``--events`` events, one write
per event. The parent process runs an ``httpx.AsyncClient`` on each transport
and reads the streams with ``aiter_bytes()``, as the relay does. Reported:
process CPU (user+sys) per event and per non-stream request, plus a floor:
the same streams read with bare ``receive_some`` and no HTTP at all.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import h11
import httpx2 as httpx
import trio

from tokn_router.net.transport import TrioH11Transport

EVENT = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,'
    b'"model":"gpt-4.1","choices":[{"index":0,"delta":{"content":"hello"},'
    b'"finish_reason":null}]}\n\n'
)


# -- upstream (child process) -------------------------------------------------


async def _upstream_conn(stream: trio.SocketStream, events: int, pace: float) -> None:
    h = h11.Connection(h11.SERVER)
    chunk = h11.Data(data=EVENT)
    target = b""
    try:
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                h.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.ConnectionClosed):
                return
            if isinstance(event, h11.Request):
                target = event.target
            if not isinstance(event, h11.EndOfMessage):
                continue
            if target == b"/json":
                body = b'{"ok":true}'
                await stream.send_all(
                    h.send(
                        h11.Response(status_code=200, headers=[("Content-Length", str(len(body)))])
                    )
                    + h.send(h11.Data(data=body))
                    + h.send(h11.EndOfMessage())
                )
            else:
                await stream.send_all(
                    h.send(
                        h11.Response(
                            status_code=200,
                            headers=[
                                ("Content-Type", "text/event-stream"),
                                ("Transfer-Encoding", "chunked"),
                            ],
                        )
                    )
                )
                for _ in range(events):
                    if pace:
                        await trio.sleep(pace)
                    await stream.send_all(h.send(chunk))
                await stream.send_all(h.send(h11.EndOfMessage()))
            h.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
        pass


def serve(port_fd: int, events: int, pace: float, cert: str = "") -> None:
    async def main() -> None:
        sock = trio.socket.from_stdlib_socket(socket.socket(fileno=port_fd))
        listener: trio.abc.Listener[trio.abc.Stream] = trio.SocketListener(sock)
        if cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert)
            # each send_all below is one TLS record: one per SSE event
            listener = trio.SSLListener(listener, ctx, https_compatible=True)
        await trio.serve_listeners(
            lambda s: _upstream_conn(s, events, pace),  # type: ignore[arg-type]
            [listener],
        )

    trio.run(main)


# -- client (this process) ----------------------------------------------------


VERIFY: ssl.SSLContext | bool = True  # set from --tls


def stock() -> httpx.AsyncBaseTransport:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=200, keepalive_expiry=60)
    return httpx.AsyncHTTPTransport(limits=limits, trust_env=False, verify=VERIFY)


def custom() -> httpx.AsyncBaseTransport:
    return TrioH11Transport(verify=VERIFY, max_keepalive_connections=200, keepalive_expiry=60)


async def run_streams(
    make: Callable[[], httpx.AsyncBaseTransport], url: str, concurrency: int, streams: int
) -> tuple[float, int, int]:
    async with httpx.AsyncClient(
        transport=make(),
        timeout=httpx.Timeout(30, read=300),
        headers={"Accept-Encoding": "identity"},
    ) as client:
        received = 0
        items = 0
        left = streams

        async def worker() -> None:
            nonlocal received, items, left
            while left > 0:
                left -= 1
                async with client.stream("POST", url + "/stream", content=b'{"stream":true}') as r:
                    async for chunk in r.aiter_raw():  # as serve/pump.py reads
                        received += len(chunk)
                        items += 1

        # Warm-up: connections and code paths.
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        left = streams
        received = items = 0
        t0 = time.process_time()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        cpu = time.process_time() - t0
    return cpu, received // len(EVENT), items


async def run_raw(url: str, concurrency: int, streams: int) -> tuple[float, int, int]:
    """The floor: the same streams read with bare receive_some, no HTTP parsing."""
    port = int(url.rsplit(":", 1)[1])
    request = b"POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n" + b'{"stream":true}'
    left = streams
    reads = 0

    async def worker() -> None:
        nonlocal left, reads
        sock = await trio.open_tcp_stream("127.0.0.1", port)
        while left > 0:
            left -= 1
            await sock.send_all(request)
            while True:
                data = await sock.receive_some(65536)
                reads += 1
                if data.endswith(b"0\r\n\r\n"):
                    break
        await sock.aclose()

    t0 = time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return time.process_time() - t0, 0, reads


async def run_requests(make: Callable[[], httpx.AsyncBaseTransport], url: str, n: int) -> float:
    async with httpx.AsyncClient(transport=make(), timeout=30) as client:
        for _ in range(50):
            (await client.post(url + "/json", json={"a": 1})).json()
        t0 = time.process_time()
        for _ in range(n):
            (await client.post(url + "/json", json={"a": 1})).json()
        return (time.process_time() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 200])
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--streams", type=int, default=400)
    ap.add_argument("--pace-ms", type=float, default=0.0)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--tls", action="store_true", help="HTTPS upstream (trustme certificate)")
    ap.add_argument("--only", default="", help="one transport: 'stock httpx' or TrioH11Transport")
    ap.add_argument("--serve-fd", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--cert", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_fd is not None:
        serve(args.serve_fd, args.events, args.pace_ms / 1000, args.cert)
        return
    global VERIFY
    tmp = tempfile.TemporaryDirectory()
    cert = ""
    if args.tls:
        import trustme

        ca = trustme.CA()
        cert = f"{tmp.name}/server.pem"
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(cert)
        VERIFY = ssl.create_default_context()
        ca.configure_trust(VERIFY)

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1024)
    port = lsock.getsockname()[1]
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            *("--serve-fd", str(lsock.fileno())),
            *("--events", str(args.events)),
            *("--pace-ms", str(args.pace_ms)),
            *("--cert", cert),
        ],
        pass_fds=[lsock.fileno()],
    )
    lsock.close()
    url = f"{'https' if args.tls else 'http'}://127.0.0.1:{port}"
    try:
        print(
            f"events/stream={args.events} streams={args.streams} pace={args.pace_ms} ms "
            f"upstream={'TLS' if args.tls else 'plain'}"
        )
        for c in args.concurrency if not args.tls else ():  # the raw floor speaks no TLS
            cpu, _, reads = trio.run(run_raw, url, c, args.streams)
            events = args.streams * args.events
            print(
                f"{'raw trio (floor)':18} concurrency {c:4}: {cpu / events * 1e6:6.1f} µs CPU/event "
                f"({events} events in {reads} reads, {cpu:.2f} s CPU)"
            )
        for name, make in (("stock httpx", stock), ("TrioH11Transport", custom)):
            if args.only and name != args.only:
                continue
            per_req = trio.run(run_requests, make, url, args.requests)
            print(f"{name:18} non-stream request: {per_req * 1e6:7.1f} µs CPU")
            for c in args.concurrency:
                cpu, events, items = trio.run(run_streams, make, url, c, args.streams)
                print(
                    f"{name:18} concurrency {c:4}: {cpu / events * 1e6:6.1f} µs CPU/event "
                    f"({events} events in {items} reads, {cpu:.2f} s CPU)"
                )
    finally:
        child.terminate()
        child.wait()
        tmp.cleanup()


if __name__ == "__main__":
    main()
