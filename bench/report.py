"""Turns run.sh's results.tsv into results.md and results.svg: every figure the median of its rounds, every
ratio against the better HAProxy of the same row (default threads or nbthread 1, whichever did better on that
measure), the targets of issue #27 checked, and the cost of access logging."""
import argparse, csv, math, os, platform, subprocess

p = argparse.ArgumentParser()
p.add_argument("--tsv", required=True)
p.add_argument("--tls", help="run.sh's tls.tsv: what each TLS listener negotiated")
p.add_argument("--out", required=True, help="directory for results.md and results.svg")
p.add_argument("--startup-ms", required=True, help="every launch's start-up in ms, space-separated")
p.add_argument("--sidekick-idle-kb", type=int, required=True)
p.add_argument("--haproxy-idle-kb", type=int, required=True)
p.add_argument("--haproxy-1t-idle-kb", type=int, required=True)
p.add_argument("--haproxy-threads", default="?")
p.add_argument("--binary-bytes", type=int, required=True)
p.add_argument("--duration", required=True)
a = p.parse_args()

here = os.path.dirname(os.path.abspath(__file__))
HAPROXIES = ("haproxy", "haproxy-1t")
# Which way is better, per measure: the "better HAProxy" is chosen per measure, so every ratio is against the
# strongest HAProxy figure of that row (HAProxy's threads can buy req/s with CPU per request).
MEASURES = {"rps": max, "cpu_us_per_req": min, "p99_ms": min, "rss_mb": min, "anon_mb": min}
LOGGING = {"haproxy+log": "haproxy", "haproxy-1t+log": "haproxy-1t", "sidekick+json": "sidekick", "sidekick+text": "sidekick"}


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def median(values):
    values = sorted(v for v in values if not math.isnan(v))
    if not values:
        return math.nan
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


# Rows keyed by (backends, size, conns), then target, then round.
raw = list(csv.DictReader(open(a.tsv), delimiter="\t"))
groups = {}
for r in raw:
    groups.setdefault((r["backends"], r["size"], r["conns"]), {}).setdefault(r["target"], {})[r["round"]] = r
rounds = sorted({r["round"] for r in raw}, key=int)


def med(group, target, key):
    return median(num(r.get(key)) for r in group.get(target, {}).values())


def best_haproxy(group, key, round_=None):
    """The better HAProxy's figure for this measure: the medians, or one round's figures."""
    if round_ is None:
        values = [med(group, t, key) for t in HAPROXIES if t in group]
    else:
        values = [num(group[t][round_][key]) for t in HAPROXIES if round_ in group.get(t, {})]
    values = [v for v in values if not math.isnan(v)]
    return MEASURES[key](values) if values else math.nan


def ratio(v, ref):
    return v / ref if ref and not math.isnan(ref) and not math.isnan(v) else math.nan


def fmt(v, digits=2, suffix=""):
    return "" if math.isnan(v) else f"{v:.{digits}f}{suffix}"


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


launches = sorted(int(ms) for ms in a.startup_ms.split())
startup = f"{launches[len(launches) // 2]} ms (median of {len(launches)} launches: {', '.join(a.startup_ms.split())} ms)"
dotnet = subprocess.run(["dotnet", "--version"], capture_output=True, text=True).stdout.strip()
setups = sorted({k[0] for k in groups}, key=lambda b: -int(b))
setup_name = {"2": "two backends (two nginx ports, balancing is real)", "1": "one backend (a sidecar in front of one endpoint)"}
lines = ["# Benchmark results", ""]
if len(rounds) < 3 or float(a.duration) < 15:
    lines += [f"**A short run ({len(rounds)} round(s) of {a.duration} s): it checks the harness; its figures are not "
              f"measurements to quote.**", ""]
lines += [
         f"Machine: {os.cpu_count()} cores, {cpu_model()}, Linux {platform.release()}, .NET SDK {dotnet}. "
         f"Load generator (wrk or h2load, 2 threads), backend (nginx, 1 worker), proxy and load generator share the same "
         f"cores, so absolute numbers are low and noisy; **ratios against HAProxy from the same run are the headline**. "
         f"{a.duration} s per measurement; {len(rounds)} round(s), interleaved (each round runs every proxy once per row, "
         f"in a rotating order), each figure the median of its rounds.", "",
         f"HAProxy runs two ways in every row: `haproxy` with its default threads (no `nbthread` line: "
         f"{a.haproxy_threads} threads here) and `haproxy-1t` with `nbthread 1`. **Every ratio is against the better "
         f"HAProxy of its row, per column** (the higher req/s, the lower CPU per request, p99 and RSS of the two), "
         f"so sidekick is compared with whichever way of running HAProxy does best on that measure.", "",
         f"sidekick Native AOT binary: {a.binary_bytes / 1e6:.1f} MB; start-up to first proxied 200: {startup}; "
         f"idle RSS: {a.sidekick_idle_kb / 1024:.1f} MB (HAProxy {a.haproxy_idle_kb / 1024:.1f} MB with default threads, "
         f"{a.haproxy_1t_idle_kb / 1024:.1f} MB with one).", ""]

# --- Targets (issue #27): sidekick against the better HAProxy, medians, and each round's ratio in brackets.
TARGETS = [  # (size, conns, measure, comparison, limit)
    *[(s, c, m, op, lim) for s, c in (("1k", "32"), ("1k", "256"), ("64k", "32"))
      for m, op, lim in (("rps", ">=", 1.0), ("cpu_us_per_req", "<=", 1.0), ("p99_ms", "<=", 1.0))],
    ("1k h2", "32x8", "rps", ">=", 1.0), ("1k h2", "32x8", "cpu_us_per_req", "<=", 1.2),
    ("1k tls", "32", "cpu_us_per_req", "<=", 1.0),
]
LABEL = {"rps": "req/s", "cpu_us_per_req": "CPU per request", "p99_ms": "p99", "rss_mb": "RSS under load"}


def verdict(ok):
    return "" if ok is None else "yes" if ok else "**no**"


lines += ["## Targets (issue #27): sidekick against the better HAProxy", "",
          "| set-up | row | measure | target | median | per round | met |", "|---|---|---|---|---|---|---|"]
for b in setups:
    for size, conns, key, op, limit in TARGETS:
        g = groups.get((b, size, conns))
        if not g or "sidekick" not in g:
            continue
        v = ratio(med(g, "sidekick", key), best_haproxy(g, key))
        per = [ratio(num(g["sidekick"][r][key]), best_haproxy(g, key, r)) for r in rounds if r in g["sidekick"]]
        ok = None if math.isnan(v) else v >= limit if op == ">=" else v <= limit
        lines.append(f"| {b} | {size} x {conns} | {LABEL[key]} | {op} {limit:.1f}x | {fmt(v)}x | "
                     f"{', '.join(fmt(x) for x in per)} | {verdict(ok)} |")
    # RSS under load: sidekick's against the better HAProxy's + 5 MB, the worst row of the set-up (and how
    # much of the difference is anonymous memory rather than pages of the executable and libraries).
    worst = None
    for (gb, size, conns), g in groups.items():
        if gb == b and "sidekick" in g:
            d = med(g, "sidekick", "rss_mb") - best_haproxy(g, "rss_mb")
            if not math.isnan(d) and (worst is None or d > worst[0]):
                worst = (d, f"{size} x {conns}", med(g, "sidekick", "anon_mb") - best_haproxy(g, "anon_mb"))
    if worst:
        lines.append(f"| {b} | worst row ({worst[1]}) | RSS under load | <= HAProxy + 5 MB | {worst[0]:+.1f} MB "
                     f"(anonymous {worst[2]:+.1f} MB) | | {verdict(worst[0] <= 5)} |")

# --- Cost of access logging: each logging proxy against the same proxy with logging off, same row, same rounds.
costs = []  # (backends, size, conns, target, cost, per-round costs, cpu added, lines per request)
for (b, size, conns), g in groups.items():
    for target, plain in LOGGING.items():
        if target in g and plain in g:
            cost = 1 - ratio(med(g, target, "rps"), med(g, plain, "rps"))
            per = [1 - ratio(num(g[target][r]["rps"]), num(g[plain][r]["rps"])) for r in rounds if r in g[target] and r in g[plain]]
            cpu = med(g, target, "cpu_us_per_req") - med(g, plain, "cpu_us_per_req")
            per_req = median(num(r["logged"]) / num(r["requests"]) for r in g[target].values() if num(r["requests"]))
            costs.append((b, size, conns, target, cost, per, cpu, per_req))
for b, size, conns, target, cost, per, _, _ in costs:
    if target.startswith("sidekick"):
        hap = [c for (cb, cs, cc, t, c, *_) in costs if (cb, cs, cc) == (b, size, conns) and t.startswith("haproxy")]
        hap_cost = min(hap) if hap else math.nan
        ok = cost <= 0.10 and (math.isnan(hap_cost) or cost <= max(hap_cost, 0))
        lines.append(f"| {b} | {size} x {conns} | `{target}` costs | <= 10 % and <= HAProxy's logging ({fmt(hap_cost * 100, 1, ' %')}) | "
                     f"{fmt(cost * 100, 1, ' %')} | {', '.join(fmt(x * 100, 1) for x in per)} | {verdict(ok)} |")
lines += ["", "A logging cost is the req/s lost against the same proxy with logging off, in the same rounds; "
          "HAProxy's logging cost in a target is the smaller of its two ways of running (below zero, which is "
          "noise, it counts as zero).", ""]


# --- The tables, one per set-up.
def row_line(g, target):
    def m(key):
        return med(g, target, key)
    cells = [fmt(m("rps"), 0), fmt(m("p50_ms"), 3), fmt(m("p99_ms"), 3), fmt(m("cpu_us_per_req"), 1),
             fmt(m("cs_per_req"), 2) if target != "direct" else "",
             f"{fmt(m('rss_mb'), 1)} ({fmt(m('anon_mb'), 1)})" if target != "direct" else ""]
    proxy = target != "direct"
    cells += [fmt(ratio(m("rps"), best_haproxy(g, "rps"))),
              fmt(ratio(m("cpu_us_per_req"), best_haproxy(g, "cpu_us_per_req"))) if proxy else "",
              fmt(ratio(m("p99_ms"), best_haproxy(g, "p99_ms"))),
              fmt(m("rss_mb") - best_haproxy(g, "rss_mb"), 1) if proxy else ""]
    errors = sum(int(r["errors"] or 0) for r in g[target].values())
    return cells + [str(errors) if errors else ""]


ORDER = ["direct", "haproxy", "haproxy-1t", "nginx", "sidekick", "haproxy+log", "haproxy-1t+log", "sidekick+json", "sidekick+text"]
for b in setups:
    lines += [f"## {setup_name.get(b, b + ' backends').capitalize()}", "",
              "| size | conns | target | req/s | p50 ms | p99 ms | proxy CPU µs/req | proxy context switches/req | proxy RSS MB (anon) | "
              "req/s vs HAProxy | CPU vs HAProxy | p99 vs HAProxy | RSS − HAProxy MB | errors |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (gb, size, conns), g in groups.items():
        if gb != b:
            continue
        for target in sorted(g, key=lambda t: ORDER.index(t) if t in ORDER else len(ORDER)):
            lines.append(f"| {size} | {conns} | {target} | " + " | ".join(row_line(g, target)) + " |")
    lines.append("")

if costs:
    lines += ["## Cost of access logging", "",
              "Each logging proxy against the same proxy with logging off, in the same rounds. `sidekick+json`: "
              "`--trace all --json`, `sidekick+text`: `--trace all`, both with stdout appended to a file; `haproxy+log` "
              "and `haproxy-1t+log`: `option httplog` with `log stdout format raw local0`, stdout appended to a file. "
              "Lines per request under 1 mean the logger dropped lines (sidekick drops when 16,384 entries wait to be "
              "written and counts them in `sidekick_trace_dropped_total`).", "",
              "| set-up | size | conns | proxy | req/s lost | per round % | CPU µs/req added | lines logged per request |",
              "|---|---|---|---|---|---|---|---|"]
    for b, size, conns, target, cost, per, cpu, per_req in costs:
        lines.append(f"| {b} | {size} | {conns} | {target} | {fmt(cost * 100, 1, ' %')} | "
                     f"{', '.join(fmt(x * 100, 1) for x in per)} | {fmt(cpu, 1, '')} | {fmt(per_req, 2)} |")
    lines.append("")

if a.tls and os.path.exists(a.tls):
    tls = list(csv.DictReader(open(a.tls), delimiter="\t"))
    seen = sorted({f"{t['target']}: {t['protocol'] or '?'} {t['cipher']}".strip() for t in tls})
    lines += ["TLS negotiated by each listener with a default OpenSSL client (the library wrk uses): " + "; ".join(seen) + ".", ""]

lines += ["Rows `1k tls` are HTTPS from the client (wrk over TLS 1.3, HTTP/1.1 keep-alive, 32 connections); rows "
          "`1k h2` are HTTP/2 over TLS 1.3 from the client (h2load, 32 connections x 8 streams); every proxy uses "
          "HTTP/1.1 keep-alive to the backend. For the h2 rows the p50 column holds h2load's mean latency (it reports "
          "no percentiles). Every proxy's TLS listener is a process of its own (sidekick with `--cert`/`--key` takes "
          "one listener per process), so the plain rows carry no TLS state and the TLS rows are measured on the "
          "process that serves them.", "",
          "CPU per request is user+system time of the proxy's processes from /proc over the measured window divided by the "
          "requests served; RSS is sampled in the middle of the window, with its anonymous part (heap, stacks: the memory "
          "the process owns; the rest is pages of its executable and libraries) in brackets. Every proxy runs in the "
          "foreground, HAProxy too (`-db`): a daemonized HAProxy runs in a forked process, whose RSS leaves out the pages "
          "of its binary and libraries mapped before the fork until it touches them again (8 MB of 20 idle here); "
          "runs before issue #27 compared against that. `direct` is the load generator against the nginx "
          "backend itself. `errors` sums failed requests and non-2xx answers over all rounds.", "",
          "![requests per second and CPU per request, relative to the better HAProxy](results.svg)", ""]
# Hand-written analysis (what changed, A/B runs, where the gap is) follows the generated tables in bench/.
notes = os.path.join(here, "results-notes.md")
if os.path.abspath(a.out) == here and os.path.exists(notes):
    lines += [open(notes).read().rstrip(), ""]
open(os.path.join(a.out, "results.md"), "w").write("\n".join(lines))

# --- SVG: req/s and CPU per request relative to the better HAProxy, per row and set-up (1.0 = the better HAProxy).
targets = ["direct", "haproxy", "haproxy-1t", "nginx", "sidekick"]
colors = {"direct": "#999", "haproxy": "#2a7", "haproxy-1t": "#8c8", "nginx": "#27a", "sidekick": "#a52"}
scen = [k for k in groups if "sidekick" in groups[k]]
bar, gap = 16, 24          # bar width, space between rows
gw = bar * len(targets) + gap
cap = 2.0                  # bars stop at 2x (their label still gives the ratio)
panel_h, head, foot = 180, 36, 40  # a panel's bars, the room above them (title, labels), below (row names)
w = 60 + gw * len(scen)
h = 30 + 2 * (head + panel_h + foot) + 24
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
       f'<text x="10" y="18" font-size="13">Relative to the better HAProxy of each row (default threads or nbthread 1), '
       f'same run, medians of {len(rounds)} round(s), {a.duration} s each</text>']
for panel, (key, title) in enumerate((("rps", "requests/s (higher is better)"), ("cpu_us_per_req", "CPU per request (lower is better)"))):
    top = 30 + panel * (head + panel_h + foot)
    y0 = top + head + panel_h  # this panel's baseline
    svg.append(f'<text x="10" y="{top + 14}" font-size="12">{title}</text>')
    svg.append(f'<line x1="50" y1="{y0}" x2="{w - 10}" y2="{y0}" stroke="#000"/>')
    for mark in (1.0, 2.0):
        y = y0 - mark * panel_h / cap
        svg.append(f'<line x1="50" y1="{y:.1f}" x2="{w - 10}" y2="{y:.1f}" stroke="#000" stroke-dasharray="4 3" stroke-opacity="{1 if mark == 1 else 0.3}"/>')
        svg.append(f'<text x="22" y="{y + 4:.1f}">{mark:.1f}</text>')
    for i, k in enumerate(scen):
        g = groups[k]
        ref = best_haproxy(g, key)
        for j, t in enumerate(targets):
            if t not in g or (key != "rps" and t == "direct"):
                continue
            v = ratio(med(g, t, key), ref)
            if math.isnan(v):
                continue
            x = 56 + i * gw + j * bar
            y = y0 - min(v, cap) * panel_h / cap
            svg.append(f'<rect x="{x}" y="{y:.1f}" width="{bar - 3}" height="{y0 - y:.1f}" fill="{colors[t]}"/>')
            lx, ly = x + bar / 2 + 2, y - 3
            svg.append(f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="8" transform="rotate(-90 {lx:.1f} {ly:.1f})">{v:.2f}</text>')
        svg.append(f'<text x="{56 + i * gw}" y="{y0 + 14}" font-size="10">{k[1]} x{k[2]}</text>')
        svg.append(f'<text x="{56 + i * gw}" y="{y0 + 26}" font-size="9" fill="#555">{k[0]} backend{"s" if k[0] != "1" else ""}</text>')
for j, t in enumerate(targets):
    svg.append(f'<rect x="{50 + j * 100}" y="{h - 18}" width="10" height="10" fill="{colors[t]}"/>'
               f'<text x="{64 + j * 100}" y="{h - 9}">{t}</text>')
svg.append("</svg>")
open(os.path.join(a.out, "results.svg"), "w").write("\n".join(svg))
