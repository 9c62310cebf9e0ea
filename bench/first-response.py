#!/usr/bin/env python3
"""usage: first-response.py PORT PATH

Polls http://127.0.0.1:PORT/PATH every millisecond until it answers 200 and prints the wall-clock time of that
answer in nanoseconds (as `date +%s%N`). run.sh starts it before launching sidekick, so the start-up it measures
does not include a client process's own start (curl takes 5-35 ms to start, depending on the host).
"""
import socket
import sys
import time

port, path = int(sys.argv[1]), sys.argv[2]
request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(request)
            status = b""
            while len(status) < 12 and (chunk := connection.recv(12 - len(status))):
                status += chunk
            if status == b"HTTP/1.1 200":
                print(time.time_ns())
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.001)
sys.exit(f"no 200 from 127.0.0.1:{port}{path} within 30 s")
