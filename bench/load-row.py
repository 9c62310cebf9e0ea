#!/usr/bin/env python3
"""usage: load-row.py wrk|h2load OUTPUT BACKENDS TARGET SIZE CONNS ROUND TICKS HZ RSS_KB ANON_KB LOGGED SWITCHES

Reads one wrk or h2load output and prints one row of run.sh's results.tsv (the columns of HEADER below):
requests/s, latency, the proxy's CPU time per request (TICKS of user+system time over the window, from /proc),
its context switches per request (SWITCHES over the window, all its threads, from /proc),
its RSS and the anonymous part of it sampled during the window, the requests that failed (a proxy answering 502s fast must not look fast)
and, for the proxies logging every request to a file, how many lines that file grew by (LOGGED, or "" when
the proxy does not log; lines per request well under 1 mean the logger dropped entries), and how long the
window really took (h2load: with its warm-up; a window much longer than asked for means the host stalled, and
run.sh measures it again).
"""
import re
import sys

HEADER = "backends\ttarget\tsize\tconns\tround\trps\tp50_ms\tp99_ms\tcpu_us_per_req\tcs_per_req\trss_mb\tanon_mb\trequests\terrors\tlogged\tsecs"

if sys.argv[1:] == ["--header"]:
    print(HEADER)
    sys.exit(0)

kind, path, backends, target, size, conns, round_, ticks, hz, rss_kb, anon_kb, logged, switches = sys.argv[1:14]
text = open(path).read()


def ms(value, unit):
    return float(value) / 1000 if unit == "us" else float(value) * 1000 if unit == "s" else float(value)


if kind == "wrk":
    def percentile(label):
        m = re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)" % label, text)
        return ms(*m.groups()) if m else float("nan")
    m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", text)
    requests, secs = int(m.group(1)), float(m.group(2)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(3)]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p50, p99 = percentile("50"), percentile("99")
    # "Socket errors: connect 0, read 0, write 0, timeout 0" and "Non-2xx or 3xx responses: N" appear only when non-zero.
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors += int(m.group(1)) if m else 0
else:
    # h2load reports the mean latency only (the p50 column holds it) and no percentiles.
    m = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", text)
    secs, rps = float(m.group(1)) * (0.001 if m.group(2) == "ms" else 1), float(m.group(3))
    # "succeeded" counts 2xx answers: everything else that was done failed, errored or got another status.
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", text)
    requests, errors = int(m.group(1)), int(m.group(1)) - int(m.group(2))
    m = re.search(r"time for request:\s+[\d.]+\w+\s+[\d.]+\w+\s+([\d.]+)(us|ms|s)", text)
    p50, p99 = (ms(*m.groups()) if m else float("nan")), float("nan")

cpu = int(ticks) / int(hz) * 1e6 / requests if requests and int(ticks) else 0
cs = int(switches) / requests if requests else 0
print(f"{backends}\t{target}\t{size}\t{conns}\t{round_}\t{rps:.0f}\t{p50:.3f}\t{p99:.3f}\t{cpu:.1f}\t{cs:.2f}\t"
      f"{int(rss_kb) / 1024:.1f}\t{int(anon_kb) / 1024:.1f}\t{requests}\t{errors}\t{logged}\t{secs:.2f}")
