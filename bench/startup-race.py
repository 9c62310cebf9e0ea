#!/usr/bin/env python3
"""usage: startup-race.py SIDEKICK_BINARY [ROUNDS]

Issue 25's start-up race: sidekick is started with default flags in front of one backend that starts listening
one second later. From the moment sidekick listens, 20 clients send 200 requests in all; every one must get a
200, and the figure is how long after the backend's first listen the first 200 arrived. Prints one line per
round and the median.
"""
import http.client
import http.server
import socket
import statistics
import subprocess
import sys
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Backend(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def round_once(binary):
    sidekick_port, backend_port = free_port(), free_port()
    process = subprocess.Popen([binary, "--address", f"127.0.0.1:{sidekick_port}", "--health-path", "/health",
                                "--trace", "", f"http://127.0.0.1:{backend_port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:  # sidekick listens
            try:
                socket.create_connection(("127.0.0.1", sidekick_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.001)

        statuses, first_ok, lock, sent = [], [None], threading.Lock(), [0]

        def client():
            connection = http.client.HTTPConnection("127.0.0.1", sidekick_port, timeout=30)
            while True:
                with lock:
                    if sent[0] >= 200:
                        return
                    sent[0] += 1
                connection.request("GET", "/x")
                response = connection.getresponse()
                response.read()
                now = time.monotonic()
                with lock:
                    statuses.append(response.status)
                    if response.status == 200 and first_ok[0] is None:
                        first_ok[0] = now

        clients = [threading.Thread(target=client) for _ in range(20)]
        for thread in clients:
            thread.start()
        time.sleep(1)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", backend_port), Backend)
        listening = time.monotonic()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        for thread in clients:
            thread.join()
        server.shutdown()
        failed = sum(1 for s in statuses if s != 200)
        return (first_ok[0] - listening) * 1000, failed
    finally:
        process.terminate()
        process.wait()


binary = sys.argv[1]
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
figures = []
for i in range(rounds):
    after, failed = round_once(binary)
    figures.append(after)
    print(f"round {i + 1}: first 200 {after:.0f} ms after the backend listened; {failed} of 200 requests failed")
print(f"median: {statistics.median(figures):.0f} ms")
