#!/usr/bin/env python3
"""Turn one bench/run work directory into a table, the PRODUCT.md ratios and a JSON record.

usage: report.py WORK_DIR OUT_BASE     (writes OUT_BASE.md and OUT_BASE.json, prints the .md)

Reads WORK_DIR/meta.txt (key=value), runs.tsv (one line per measured configuration, written by
bench/run), each configuration's load-generator output (NAME.load; wrk or h2load, with the
h2load per-request log NAME.h2log) and conns.tsv (resident memory with idle connections).
"""
import json
import os
import re
import sys

LABELS = {
    "direct": ("upstream direct (nginx)", "HTTP/1.1", "-"),
    "haproxy-plain": ("HAProxy plain hop", "HTTP/1.1", "-"),
    "haproxy-jwt": ("HAProxy jwt_verify (step 4)", "HTTP/1.1", "repeated"),
    "haproxy-jwt-fresh": ("HAProxy jwt_verify (step 4)", "HTTP/1.1", "fresh"),
    "meshguard-nopolicy": ("meshguard, no policies", "HTTP/1.1", "-"),
    "meshguard-step4": ("meshguard step 4", "HTTP/1.1", "repeated"),
    "meshguard-fresh": ("meshguard step 4", "HTTP/1.1", "fresh"),
    "meshguard-fresh-nocache": ("meshguard step 4, --token-cache-size 0", "HTTP/1.1", "fresh"),
    "meshguard-step4-h2": ("meshguard step 4", "h2c", "repeated"),
    "haproxy-jwt-h2": ("HAProxy jwt_verify (step 4)", "h2c", "repeated"),
}

# (id, target text, numerator, denominator, kind, threshold)
TARGETS = [
    ("repeated_token", "same token repeated: meshguard >= 2x HAProxy-JWT throughput",
     "meshguard-step4", "haproxy-jwt", "ratio_ge", 2.0),
    ("fresh_token", "new token on every request: meshguard >= 1.2x HAProxy-JWT throughput",
     "meshguard-fresh", "haproxy-jwt-fresh", "ratio_ge", 1.2),
    ("policy_cost", "JWT + authorization cost <= 10% of throughput vs meshguard without policies",
     "meshguard-step4", "meshguard-nopolicy", "cost_le", 0.10),
    ("plain_hop", "meshguard plain hop >= HAProxy plain hop throughput",
     "meshguard-nopolicy", "haproxy-plain", "ratio_ge", 1.0),
]
OTHER_CPU_LIMIT = float(os.environ.get("OTHER_LIMIT", "5"))  # % of one core used by others: flagged
RSS_TARGET_MB = 20.0  # PRODUCT.md: under 20 MB resident with 1,000 open connections (MB = 10^6 B)


def to_ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        raise ValueError(f"latency {value!r}")
    n, unit = float(m.group(1)), m.group(2)
    return n * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}[unit]


def parse_wrk(text: str) -> dict:
    r = {"tool": "wrk"}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    r["requests"] = int(m.group(1))
    r["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        r[f"p{pct}_ms"] = to_ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    r["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["socket_errors"] = sum(int(g) for g in m.groups()) if m else 0
    return r


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def parse_h2load(text: str, log_path: str) -> dict:
    r = {"tool": "h2load"}
    r["rps"] = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text).group(1))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", text)
    r["requests"] = int(m.group(3))
    r["socket_errors"] = int(m.group(5)) + int(m.group(6)) + int(m.group(7))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    r["non_2xx"] = int(m.group(2)) + int(m.group(3)) + int(m.group(4))
    durations = []
    if os.path.exists(log_path):
        with open(log_path) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3:
                    durations.append(int(parts[2]) / 1000.0)
    durations.sort()
    for pct in (50, 75, 90, 99):
        v = percentile(durations, pct)
        r[f"p{pct}_ms"] = v
    r["latency_samples"] = len(durations)
    return r


def read_meta(work):
    meta = {}
    with open(os.path.join(work, "meta.txt")) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            meta[k] = v
    return meta


def fmt(v, spec, none="-"):
    return none if v is None else format(v, spec)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    work, out_base = sys.argv[1], sys.argv[2]
    meta = read_meta(work)
    clk = int(meta["clk_tck"])

    runs = {}
    with open(os.path.join(work, "runs.tsv")) as f:
        for line in f:
            (name, proto, ticks, hwm, b0, t0, b1, t1, threads,
             gen, nginx_ticks, other, attempts) = line.rstrip("\n").split("\t")
            text = open(os.path.join(work, name + ".load")).read()
            r = parse_wrk(text) if proto == "h1" else parse_h2load(text, os.path.join(work, name + ".h2log"))
            label, protocol, token = LABELS.get(name, (name, proto, "-"))
            r.update(name=name, label=label, protocol=protocol, token=token)
            r["cpu_us_per_req"] = (int(ticks) / clk) * 1e6 / r["requests"] if r["requests"] else None
            r["proxy_cpu_seconds"] = int(ticks) / clk
            r["peak_rss_kb"] = int(hwm)
            r["proxy_core_busy_pct"] = 100.0 * int(b0) / int(t0) if int(t0) else None
            r["load_core_busy_pct"] = 100.0 * int(b1) / int(t1) if int(t1) else None
            r["proxy_threads"] = int(threads)
            window = int(t0) / clk  # seconds the measured window lasted (core 0's jiffies)
            r["load_generator_cpu_seconds"] = int(gen) / clk
            r["upstream_cpu_us_per_req"] = (int(nginx_ticks) / clk) * 1e6 / r["requests"] if r["requests"] else None
            r["other_cpu_pct"] = 100.0 * (int(other) / clk) / window if window else None
            r["disturbed"] = r["other_cpu_pct"] is not None and r["other_cpu_pct"] > OTHER_CPU_LIMIT
            r["attempts"] = int(attempts)
            r["valid"] = r["non_2xx"] == 0 and r["socket_errors"] == 0 and r["requests"] > 0
            runs[name] = r

    conns = []
    path = os.path.join(work, "conns.tsv")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                name, n, rss, hwm, note = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
                conns.append({
                    "proxy": name,
                    "connections": 0 if n == "idle" else int(n),
                    "rss_kb": int(rss) if rss else None,
                    "peak_rss_kb": int(hwm) if hwm else None,
                    "note": note,
                })

    targets = []
    for tid, text, num, den, kind, thr in TARGETS:
        a, b = runs.get(num), runs.get(den)
        t = {"id": tid, "target": text, "numerator": num, "denominator": den}
        if not a or not b:
            t.update(value=None, met=None, note="not measured")
        elif not (a["valid"] and b["valid"]):
            t.update(value=None, met=None, note="a run had errors or non-2xx answers")
        else:
            ratio = a["rps"] / b["rps"]
            t["cpu_ratio"] = b["cpu_us_per_req"] / a["cpu_us_per_req"] if a["cpu_us_per_req"] else None
            if kind == "ratio_ge":
                t.update(value=ratio, met=ratio >= thr, shown=f"{ratio:.2f}x (target >= {thr:g}x)")
            else:
                cost = 1.0 - ratio
                t.update(value=cost, met=cost <= thr, shown=f"{100 * cost:.1f}% (target <= {100 * thr:g}%)")
        targets.append(t)
    m1k = next((c for c in conns if c["proxy"] == "meshguard-step4" and c["connections"] == 1000), None)
    t = {"id": "rss_1000_connections", "target": "meshguard under 20 MB resident with 1,000 open connections"}
    if m1k and m1k["rss_kb"] and m1k["note"].startswith("open=1000 "):
        mb = m1k["rss_kb"] * 1024 / 1e6
        t.update(value=mb, met=mb < RSS_TARGET_MB, shown=f"{mb:.1f} MB (target < {RSS_TARGET_MB:g} MB)")
    else:
        t.update(value=None, met=None, note="not measured" if not m1k else m1k["note"])
    targets.append(t)

    record = {"meta": meta, "runs": list(runs.values()), "connections": conns, "targets": targets,
              "disturbed_runs": [r["name"] for r in runs.values() if r["disturbed"]]}
    with open(out_base + ".json", "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")

    L = []
    L.append(f"# meshguard benchmark, {meta['date']}")
    L.append("")
    L.append(f"`{meta['command']}` with DURATION={meta['duration']}s (after a {meta['warmup']}s warm-up), "
             f"{meta['conns']} connections, {meta['threads']} load-generator thread(s); HTTP/2: "
             f"h2load -c{meta['conns']} -m{meta['h2_streams']}. Proxy pinned to core {meta['proxy_cpu']}; "
             f"load generator and nginx upstream share core {meta['load_cpu']}. "
             f"Fresh-token runs cycle through {meta['tokens']} distinct pre-minted RS256 tokens.")
    L.append("")
    L.append(f"Machine: {meta['nproc']} cores, {meta['cpu_model']}, {meta['kernel']}; {meta['haproxy']}; "
             f"{meta['wrk']}; {meta['h2load']}; {meta['nginx']}; {meta['rustc']}; meshguard {meta['meshguard_commit']} "
             f"({meta['meshguard_tree']}). Before the run: {meta.get('quiet_check', 'not checked')}; "
             f"load average at the end: {meta['loadavg_end']}.")
    L.append("")
    disturbed = [r["name"] for r in runs.values() if r["disturbed"]]
    if disturbed:
        L.append(f"**WARNING: other processes used more than {OTHER_CPU_LIMIT:g}% of a core during: "
                 f"{', '.join(disturbed)}. Those numbers are skewed; run again on a quiet machine.**")
        L.append("")
    L.append("| configuration | protocol | token | requests/s | p50 ms | p99 ms | proxy CPU µs/req | peak RSS MB | proxy core busy | load core busy | other CPU | errors |")
    L.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in runs.values():
        err = "none" if r["valid"] else f"non-2xx {r['non_2xx']}, socket {r['socket_errors']}"
        L.append(
            f"| {r['label']} (`{r['name']}`) | {r['protocol']} | {r['token']} | {r['rps']:,.0f} | "
            f"{fmt(r['p50_ms'], '.2f')} | {fmt(r['p99_ms'], '.2f')} | {fmt(r['cpu_us_per_req'], '.1f')} | "
            f"{r['peak_rss_kb'] * 1024 / 1e6:.1f} | {fmt(r['proxy_core_busy_pct'], '.0f')}% | "
            f"{fmt(r['load_core_busy_pct'], '.0f')}% | {fmt(r['other_cpu_pct'], '.1f')}% | {err} |")
    L.append("")
    L.append("CPU µs/req: the proxy process's utime+stime over the measured window divided by the requests "
             "completed (for the direct row: nginx's). Peak RSS: VmHWM of that process. Core busy: "
             "non-idle share of each core over the window. Other CPU: what processes other than the proxy, "
             "nginx and the load generator used on the two cores meanwhile, in % of one core.")
    L.append("")
    if conns:
        L.append("Resident memory (VmRSS) with idle keep-alive connections, each having made one request:")
        L.append("")
        L.append("| proxy | connections | RSS MB | peak RSS MB | note |")
        L.append("|---|---:|---:|---:|---|")
        for c in conns:
            L.append(f"| {c['proxy']} | {c['connections'] if c['connections'] else 'idle'} | "
                     f"{fmt(c['rss_kb'] and c['rss_kb'] * 1024 / 1e6, '.1f')} | "
                     f"{fmt(c['peak_rss_kb'] and c['peak_rss_kb'] * 1024 / 1e6, '.1f')} | {c['note']} |")
        L.append("")
    L.append("PRODUCT.md targets:")
    L.append("")
    L.append("| target | measured (throughput) | proxy CPU per request, same pair | result |")
    L.append("|---|---|---|---|")
    for t in targets:
        res = "not measured" if t["met"] is None else ("MET" if t["met"] else "NOT MET")
        cpu = ""
        if t.get("cpu_ratio") is not None:
            a, b = runs[t["numerator"]], runs[t["denominator"]]
            cpu = f"{a['cpu_us_per_req']:.1f} vs {b['cpu_us_per_req']:.1f} µs"
            if t["id"] == "policy_cost":
                cpu += f" ({100 * (a['cpu_us_per_req'] / b['cpu_us_per_req'] - 1):+.1f}%)"
            else:
                cpu += f" ({t['cpu_ratio']:.2f}x)"
        L.append(f"| {t['target']} | {t.get('shown', t.get('note', ''))} | {cpu} | **{res}** |")
    L.append("")
    other = []
    if "meshguard-step4-h2" in runs and "haproxy-jwt-h2" in runs:
        a, b = runs["meshguard-step4-h2"], runs["haproxy-jwt-h2"]
        other.append(f"- HTTP/2, token repeated: meshguard {a['rps']:,.0f} req/s vs HAProxy-JWT {b['rps']:,.0f} "
                     f"({a['rps'] / b['rps']:.2f}x); CPU per request {a['cpu_us_per_req']:.1f} vs {b['cpu_us_per_req']:.1f} µs.")
    if "meshguard-fresh" in runs and "meshguard-fresh-nocache" in runs:
        a, b = runs["meshguard-fresh"], runs["meshguard-fresh-nocache"]
        other.append(f"- Fresh tokens with the default token cache vs no cache: {a['rps']:,.0f} vs {b['rps']:,.0f} req/s, "
                     f"{a['cpu_us_per_req']:.1f} vs {b['cpu_us_per_req']:.1f} µs CPU per request (the cache cannot hit "
                     f"when tokens do not repeat within its size).")
    tokens = int(meta.get("tokens", 0) or 0)
    fresh = [r for r in runs.values() if r["token"] == "fresh"]
    if tokens and fresh:
        most = max(r["requests"] for r in fresh)
        if most <= tokens:
            other.append(f"- Fresh-token runs: at most {most:,} requests against {tokens:,} distinct tokens, so no token "
                         f"was used twice in a measured run (the warm-up started half-way down the list).")
        else:
            other.append(f"- Fresh-token runs: up to {most:,} requests against {tokens:,} distinct tokens, so each token "
                         f"was used up to {-(-most // tokens)} times, {tokens // 2:,} or more requests apart; compare "
                         f"the default-cache and no-cache rows to see whether the cache still hit.")
    if "meshguard-step4" in runs and "meshguard-fresh" in runs:
        a, b = runs["meshguard-step4"], runs["meshguard-fresh"]
        other.append(f"- Cost of a signature check in meshguard (fresh - repeated): "
                     f"{b['cpu_us_per_req'] - a['cpu_us_per_req']:.1f} µs CPU per request.")
    if "haproxy-jwt" in runs and "haproxy-plain" in runs:
        a, b = runs["haproxy-jwt"], runs["haproxy-plain"]
        other.append(f"- Cost of jwt_verify + claim checks in HAProxy (JWT - plain): "
                     f"{a['cpu_us_per_req'] - b['cpu_us_per_req']:.1f} µs CPU per request.")
    again = [f"{r['name']} ({r['attempts'] - 1}x)" for r in runs.values() if r["attempts"] > 1]
    if again:
        other.append("- Measured again because other processes were busy during the first try: "
                     + ", ".join(again) + "; the table shows the last try.")
    saturated = [r["name"] for r in runs.values()
                 if r["load_core_busy_pct"] and r["load_core_busy_pct"] > 95
                 and r["proxy_core_busy_pct"] and r["proxy_core_busy_pct"] < 90]
    if saturated:
        other.append("- Load core saturated while the proxy core had room (throughput there is bounded by the "
                     "load generator + upstream core, compare CPU per request): " + ", ".join(saturated) + ".")
    if other:
        L.append("Other observations:")
        L.append("")
        L.extend(other)
        L.append("")
    text = "\n".join(L)
    with open(out_base + ".md", "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
