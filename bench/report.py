"""Turns bench/out/results.tsv into bench/results.md and bench/results.svg (ratios against HAProxy)."""
import csv, os, platform, subprocess, sys

tsv, startup_ms, sk_idle_kb, hap_idle_kb, size_bytes, duration = sys.argv[1:7]
# Every launch's startup in ms, space-separated (run.sh launches five): the median, then all of them.
launches = sorted(int(ms) for ms in startup_ms.split())
startup_text = f"{launches[len(launches) // 2]} ms" + (
    f" (median of {len(launches)} launches: {', '.join(startup_ms.split())} ms)" if len(launches) > 1 else "")
raw = list(csv.DictReader(open(tsv), delimiter="\t"))

# Each measurement may have been taken in several rounds (ROUNDS in run.sh); every figure is the median of
# its rounds, which keeps one noisy window on this shared machine from deciding a ratio.
def median_row(rs):
    out = dict(rs[0])
    for key in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "rss_mb"):
        values = sorted(float(r[key]) for r in rs)
        m = values[len(values) // 2] if len(values) % 2 else (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2
        out[key] = f"{m:.0f}" if key == "rps" else f"{m:.3f}" if key.endswith("_ms") else f"{m:.1f}"
    return out

ordered = {}
for r in raw:
    ordered.setdefault((r["target"], r["size"], r["conns"]), []).append(r)
rows = [median_row(rs) for rs in ordered.values()]
rounds = max(len(rs) for rs in ordered.values())
here = os.path.dirname(os.path.abspath(__file__))

def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()

dotnet = subprocess.run(["dotnet", "--version"], capture_output=True, text=True).stdout.strip()
lines = ["# Benchmark results", "",
         f"Machine: {os.cpu_count()} cores, {cpu_model()}, Linux {platform.release()}, .NET SDK {dotnet}. "
         f"Load generator (wrk, 2 threads), backend (nginx, 1 worker), proxy and wrk share the same 2 cores, so absolute "
         f"numbers are low and noisy; **ratios against HAProxy from the same run are the headline**. {duration} s per measurement; "
         f"{rounds} round(s), interleaved, each figure the median of its rounds.", "",
         f"sidekick Native AOT binary: {int(size_bytes) / 1e6:.1f} MB; startup to first proxied 200: {startup_text}; "
         f"idle RSS: {int(sk_idle_kb) / 1024:.1f} MB (HAProxy {int(hap_idle_kb) / 1024:.1f} MB).", "",
         "| size | conns | target | req/s | p50 ms | p99 ms | proxy CPU µs/req | proxy RSS MB | req/s vs HAProxy | CPU vs HAProxy | p99 vs HAProxy |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
groups = {}
for r in rows:
    groups.setdefault((r["size"], r["conns"]), []).append(r)
for (size, conns), rs in groups.items():
    hap = next((r for r in rs if r["target"] == "haproxy"), None)
    for r in rs:
        def ratio(key, digits=2):
            try:
                return f"{float(r[key]) / float(hap[key]):.{digits}f}" if hap and float(hap[key]) else ""
            except ValueError:
                return ""
        lines.append(f"| {size} | {conns} | {r['target']} | {r['rps']} | {r['p50_ms']} | {r['p99_ms']} | {r['cpu_us_per_req']} | {r['rss_mb']} | "
                     f"{ratio('rps')} | {ratio('cpu_us_per_req') if r['target'] != 'direct' else ''} | {ratio('p99_ms')} |")
trace = []
for (size, conns), rs in groups.items():
    by = {r["target"]: r for r in rs}
    if "sidekick" in by and "sidekick+trace" in by:
        off, on = by["sidekick"], by["sidekick+trace"]
        trace.append(f"{size} x {conns}: {float(on['rps']) / float(off['rps']) - 1:+.1%} req/s, "
                     f"{float(on['cpu_us_per_req']) - float(off['cpu_us_per_req']):+.1f} µs CPU per request")
if trace:
    lines += ["", "Cost of tracing (`sidekick+trace`: `--trace all --json` to /dev/null, against `sidekick` with tracing off, "
              "same run): " + "; ".join(trace) + "."]
lines += ["", "Rows `1k h2` are HTTP/2 over TLS from the client (h2load, 32 connections x 8 streams; every proxy uses "
          "HTTP/1.1 keep-alive to the backend); for them the p50 column holds h2load's mean latency (it reports no percentiles).",
          "", "CPU per request is user+system time of the proxy's processes from /proc over the measured window divided by the "
          "requests served; RSS is sampled in the middle of the window. `direct` is wrk against the nginx backend itself.", "",
          "![requests per second, relative to HAProxy](results.svg)", ""]
# Hand-written analysis (what changed, A/B runs, where the gap is) follows the generated tables.
notes = os.path.join(here, "results-notes.md")
if os.path.exists(notes):
    lines += [open(notes).read().rstrip(), ""]
open(os.path.join(here, "results.md"), "w").write("\n".join(lines))

# SVG: req/s relative to HAProxy per scenario and target.
targets = ["direct", "haproxy", "nginx", "sidekick"]
colors = {"direct": "#999", "haproxy": "#2a7", "nginx": "#27a", "sidekick": "#a52"}
scen = list(groups.keys())
w, h, bar = 120 * len(scen) + 80, 300, 22
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
       f'<text x="10" y="16" font-size="13">Requests/s relative to HAProxy (same run)</text>',
       f'<line x1="40" y1="{h - 40}" x2="{w - 10}" y2="{h - 40}" stroke="#000"/>']
scale = 180
for i, key in enumerate(scen):
    rs = {r["target"]: r for r in groups[key]}
    base = float(rs["haproxy"]["rps"]) if "haproxy" in rs else 1
    for j, t in enumerate(targets):
        if t not in rs:
            continue
        v = float(rs[t]["rps"]) / base
        x = 50 + i * 120 + j * bar
        y = h - 40 - min(v, 1.5) * scale / 1.5
        svg.append(f'<rect x="{x}" y="{y:.1f}" width="{bar - 4}" height="{h - 40 - y:.1f}" fill="{colors[t]}"/>')
        svg.append(f'<text x="{x}" y="{y - 3:.1f}" font-size="9">{v:.2f}</text>')
    svg.append(f'<text x="{50 + i * 120}" y="{h - 25}">{key[0]} x {key[1]}</text>')
for j, t in enumerate(targets):
    svg.append(f'<rect x="{50 + j * 90}" y="{h - 15}" width="10" height="10" fill="{colors[t]}"/><text x="{64 + j * 90}" y="{h - 6}">{t}</text>')
svg.append("</svg>")
open(os.path.join(here, "results.svg"), "w").write("\n".join(svg))
