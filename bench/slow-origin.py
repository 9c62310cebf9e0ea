#!/usr/bin/env python3
"""A remote origin, simulated on loopback: an HTTP/1.1 proxy in front of a local server that waits DELAY
seconds before forwarding each request (the round trip to a far origin) and sends each response body at
RATE bytes per second per connection (that origin's per-connection throughput). `tc` would shape every
process's loopback traffic; this shapes only what crosses it.

    python3 bench/slow-origin.py LISTEN_PORT UPSTREAM_PORT [--rate 20000000] [--delay 0.05]

It prints "listening on PORT" once it accepts connections. Keep-alive on both sides (one upstream
connection per client connection, opened on its first request); bodies are framed by Content-Length,
which is what nginx sends for static files. Standard library only.
"""

import argparse
import asyncio
import sys

CHUNK = 64 * 1024


def header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


async def relay(reader, writer, length, paced, rate, loop):
    """Copies exactly `length` bytes, no faster than `rate` bytes/s when paced."""
    start, sent = loop.time(), 0
    while sent < length:
        chunk = await reader.read(min(CHUNK, length - sent))
        if not chunk:
            raise ConnectionError("upstream closed mid-body")
        writer.write(chunk)
        await writer.drain()
        sent += len(chunk)
        if paced:
            ahead = start + sent / rate - loop.time()
            if ahead > 0:
                await asyncio.sleep(ahead)


async def serve(client_reader, client_writer, args):
    loop = asyncio.get_running_loop()
    upstream = None
    try:
        while True:
            try:
                head = await client_reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # the client closed its keep-alive connection
            await asyncio.sleep(args.delay)
            if upstream is None:
                upstream = await asyncio.open_connection("127.0.0.1", args.upstream)
            up_reader, up_writer = upstream
            up_writer.write(head)
            request_length = int(header(head, b"content-length") or 0)
            if request_length:
                await relay(client_reader, up_writer, request_length, False, 0, loop)
            await up_writer.drain()

            response = await up_reader.readuntil(b"\r\n\r\n")
            if header(response, b"transfer-encoding") is not None:
                raise ConnectionError("chunked responses are not supported")
            status = int(response.split(b" ", 2)[1])
            no_body = head.startswith(b"HEAD ") or status in (204, 304) or status < 200
            length = 0 if no_body else int(header(response, b"content-length") or 0)
            client_writer.write(response)
            await relay(up_reader, client_writer, length, True, args.rate, loop)
            if (header(response, b"connection") or b"").lower() == b"close" or \
                    (header(head, b"connection") or b"").lower() == b"close":
                return
    except (ConnectionError, asyncio.IncompleteReadError) as error:
        print(f"slow-origin: connection dropped: {error}", file=sys.stderr)
    finally:
        client_writer.close()
        if upstream is not None:
            upstream[1].close()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("listen", type=int)
    parser.add_argument("upstream", type=int)
    parser.add_argument("--rate", type=float, default=20_000_000, help="bytes per second per connection")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds added before forwarding each request")
    args = parser.parse_args()
    server = await asyncio.start_server(lambda r, w: serve(r, w, args), "127.0.0.1", args.listen)
    print(f"listening on {args.listen}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
