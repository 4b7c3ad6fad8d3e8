#!/usr/bin/env python3
"""Turn one bench/run work directory into a table, the performance-target ratios and a JSON record.

usage: report.py WORK_DIR OUT_BASE     (writes OUT_BASE.md and OUT_BASE.json, prints the .md)

Reads WORK_DIR/meta.txt (key=value), runs.tsv (one line per measurement, written by bench/run),
each measurement's load-generator output (NAME.ROUND.load; wrk, or h2load with its per-request
log NAME.ROUND.h2log) and conns.tsv (resident memory with idle connections). Each configuration
is measured once per round; the table shows the median over the rounds and the range.
"""
import json
import os
import re
import statistics
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
    "envoy-plain": ("Envoy plain hop", "HTTP/1.1", "-"),
    "envoy-jwt": ("Envoy jwt_authn + rbac (step 4)", "HTTP/1.1", "repeated"),
    "envoy-jwt-fresh": ("Envoy jwt_authn + rbac (step 4)", "HTTP/1.1", "fresh"),
    "envoy-jwt-h2": ("Envoy jwt_authn + rbac (step 4)", "h2c", "repeated"),
    "direct-h2c": ("upstream direct (nginx h2c)", "h2c to h2c", "-"),
    "haproxy-plain-h2c": ("HAProxy plain hop", "h2c to h2c", "-"),
    "envoy-plain-h2c": ("Envoy plain hop", "h2c to h2c", "-"),
    "meshguard-nopolicy-h2c": ("meshguard, no policies", "h2c to h2c", "-"),
    "direct-grpc": ("upstream direct (nginx gRPC)", "gRPC", "-"),
    "haproxy-jwt-grpc": ("HAProxy jwt_verify (step 4)", "gRPC", "repeated"),
    "envoy-jwt-grpc": ("Envoy jwt_authn + rbac (step 4)", "gRPC", "repeated"),
    "meshguard-step4-grpc": ("meshguard step 4", "gRPC", "repeated"),
    "meshguard-mtls": ("meshguard --tls-dir, STRICT", "HTTP/1.1 over mTLS, kept alive", "-"),
    "haproxy-mtls": ("HAProxy ssl verify required", "HTTP/1.1 over mTLS, kept alive", "-"),
    "envoy-mtls": ("Envoy, istiod's STRICT chain", "HTTP/1.1 over mTLS, kept alive", "-"),
    "meshguard-mtls-hs": ("meshguard --tls-dir, STRICT", "mTLS, new connection per request", "-"),
    "haproxy-mtls-hs": ("HAProxy ssl verify required", "mTLS, new connection per request", "-"),
    "envoy-mtls-hs": ("Envoy, istiod's STRICT chain", "mTLS, new connection per request", "-"),
    "envoy-extauthz": ("Envoy ext_authz asking meshguard ext-authz (step 4)", "HTTP/1.1", "repeated"),
    "meshguard-extauthz-check": ("meshguard ext-authz, Check called directly (step 4)", "gRPC Check", "repeated"),
    "meshguard-extauthz-latency": ("meshguard ext-authz, one Check at a time (step 4)", "gRPC Check", "repeated"),
}
# Envoy's own filters against Envoy asking `meshguard ext-authz` (both processes on the proxy
# core; CPU per request is their sum), and the Check alone: (what, name)
EXT_AUTHZ = [
    ("Envoy jwt_authn + rbac (native filters)", "envoy-jwt"),
    ("Envoy ext_authz (gRPC) -> meshguard ext-authz", "envoy-extauthz"),
    ("meshguard proxy, step 4 (for scale)", "meshguard-step4"),
    ("meshguard ext-authz Check, called directly (h2load, gRPC)", "meshguard-extauthz-check"),
    ("meshguard ext-authz Check, one at a time (h2load -c1 -m1)", "meshguard-extauthz-latency"),
]
# Rows side by side: (what, meshguard, HAProxy, Envoy)
PEERS = [
    ("HTTP/1.1 plain hop", "meshguard-nopolicy", "haproxy-plain", "envoy-plain"),
    ("HTTP/1.1 step 4, token repeated", "meshguard-step4", "haproxy-jwt", "envoy-jwt"),
    ("HTTP/1.1 step 4, new token each request", "meshguard-fresh", "haproxy-jwt-fresh", "envoy-jwt-fresh"),
    ("h2c client, HTTP/1.1 upstream, step 4", "meshguard-step4-h2", "haproxy-jwt-h2", "envoy-jwt-h2"),
    ("h2c to h2c plain hop", "meshguard-nopolicy-h2c", "haproxy-plain-h2c", "envoy-plain-h2c"),
    ("gRPC unary (h2c to h2c), step 4", "meshguard-step4-grpc", "haproxy-jwt-grpc", "envoy-jwt-grpc"),
    ("mTLS (STRICT), kept-alive connections", "meshguard-mtls", "haproxy-mtls", "envoy-mtls"),
    ("mTLS (STRICT), a full handshake per request", "meshguard-mtls-hs", "haproxy-mtls-hs", "envoy-mtls-hs"),
]
MEM = [("meshguard step 4", "meshguard-mem"), ("HAProxy jwt_verify", "haproxy-mem"),
       ("Envoy jwt_authn + rbac", "envoy-mem")]
ORDER = list(LABELS)

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
RSS_TARGET_MB = 20.0  # performance target: under 20 MB resident with 1,000 open connections (MB = 10^6 B)


def to_ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        raise ValueError(f"latency {value!r}")
    n, unit = float(m.group(1)), m.group(2)
    return n * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}[unit]


def parse_wrk(text: str) -> dict:
    r = {"tool": "wrk"}
    r["requests"] = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", text).group(1))
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
    r["h2c"] = "Application protocol: h2c" in text
    durations = []
    if os.path.exists(log_path):
        with open(log_path) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3:
                    durations.append(int(parts[2]) / 1000.0)
    durations.sort()
    for pct in (50, 75, 90, 99):
        r[f"p{pct}_ms"] = percentile(durations, pct)
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


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def read_measurements(work, clk):
    out = []
    with open(os.path.join(work, "runs.tsv")) as f:
        for line in f:
            (name, proto, ticks, hwm, b0, t0, b1, t1, threads,
             gen, nginx_ticks, other, attempts, rnd) = line.rstrip("\n").split("\t")
            base = os.path.join(work, f"{name}.{rnd}")
            text = open(base + ".load").read()
            r = parse_wrk(text) if proto == "h1" else parse_h2load(text, base + ".h2log")
            window = int(t0) / clk  # seconds the measured window lasted (core 0's jiffies)
            r.update(
                name=name,
                round=int(rnd),
                attempts=int(attempts),
                cpu_us_per_req=(int(ticks) / clk) * 1e6 / r["requests"] if r["requests"] else None,
                proxy_cpu_seconds=int(ticks) / clk,
                peak_rss_kb=int(hwm),
                proxy_core_busy_pct=100.0 * int(b0) / int(t0) if int(t0) else None,
                load_core_busy_pct=100.0 * int(b1) / int(t1) if int(t1) else None,
                proxy_threads=int(threads),
                load_generator_cpu_seconds=int(gen) / clk,
                upstream_cpu_us_per_req=(int(nginx_ticks) / clk) * 1e6 / r["requests"] if r["requests"] else None,
                other_cpu_pct=100.0 * (int(other) / clk) / window if window else None,
            )
            r["valid"] = (r["non_2xx"] == 0 and r["socket_errors"] == 0 and r["requests"] > 0
                          and r.get("h2c", True))  # an HTTP/2 run must really have spoken h2c
            r["disturbed"] = r["other_cpu_pct"] is not None and r["other_cpu_pct"] > OTHER_CPU_LIMIT
            out.append(r)
    return out


def aggregate(measurements):
    by_name = {}
    for m in measurements:
        by_name.setdefault(m["name"], []).append(m)
    runs = {}
    for name in sorted(by_name, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        ms = sorted(by_name[name], key=lambda m: m["round"])
        label, protocol, token = LABELS.get(name, (name, ms[0]["tool"], "-"))
        rps = [m["rps"] for m in ms]
        cpu = [m["cpu_us_per_req"] for m in ms if m["cpu_us_per_req"] is not None]
        runs[name] = {
            "name": name, "label": label, "protocol": protocol, "token": token,
            "rounds": len(ms),
            "rps": med(rps), "rps_min": min(rps), "rps_max": max(rps),
            "p50_ms": med([m["p50_ms"] for m in ms]),
            "p99_ms": med([m["p99_ms"] for m in ms]),
            "cpu_us_per_req": med(cpu), "cpu_min": min(cpu) if cpu else None, "cpu_max": max(cpu) if cpu else None,
            "peak_rss_kb": max(m["peak_rss_kb"] for m in ms),
            "proxy_core_busy_pct": med([m["proxy_core_busy_pct"] for m in ms]),
            "load_core_busy_pct": med([m["load_core_busy_pct"] for m in ms]),
            "other_cpu_pct": max(m["other_cpu_pct"] for m in ms),
            "max_requests": max(m["requests"] for m in ms),
            "valid": all(m["valid"] for m in ms),
            "non_2xx": sum(m["non_2xx"] for m in ms),
            "socket_errors": sum(m["socket_errors"] for m in ms),
            "disturbed": any(m["disturbed"] for m in ms),
            "retries": sum(m["attempts"] - 1 for m in ms),
            "proxy_threads": ms[0]["proxy_threads"],
            "per_round": [{k: m[k] for k in ("round", "rps", "p50_ms", "p99_ms", "cpu_us_per_req",
                                             "peak_rss_kb", "requests", "other_cpu_pct", "attempts")}
                          for m in ms],
        }
    return runs


def compute_targets(runs, conns):
    targets = []
    for tid, text, num, den, kind, thr in TARGETS:
        a, b = runs.get(num), runs.get(den)
        t = {"id": tid, "target": text, "numerator": num, "denominator": den, "threshold": thr}
        if not a or not b:
            t.update(value=None, met=None, note="not measured")
            targets.append(t)
            continue
        if not (a["valid"] and b["valid"]):
            t.update(value=None, met=None, note="a run had errors or non-2xx answers")
            targets.append(t)
            continue
        ratio = a["rps"] / b["rps"]
        # the same ratio round by round (the two measurements of a round are minutes apart at most)
        pairs = {m["round"]: m["rps"] for m in b["per_round"]}
        per_round = [m["rps"] / pairs[m["round"]] for m in a["per_round"] if m["round"] in pairs]
        t["cpu_ratio"] = b["cpu_us_per_req"] / a["cpu_us_per_req"] if a["cpu_us_per_req"] else None
        if kind == "ratio_ge":
            t.update(value=ratio, met=ratio >= thr, per_round=per_round,
                     shown=f"{ratio:.2f}x (target >= {thr:g}x)",
                     spread=f"{min(per_round):.2f}x to {max(per_round):.2f}x" if per_round else "")
            t["all_rounds_met"] = all(v >= thr for v in per_round)
            t["no_round_met"] = not any(v >= thr for v in per_round)
        else:
            costs = [1.0 - v for v in per_round]
            cost = 1.0 - ratio
            t.update(value=cost, met=cost <= thr, per_round=costs,
                     shown=f"{100 * cost:.1f}% (target <= {100 * thr:g}%)",
                     spread=f"{100 * min(costs):.1f}% to {100 * max(costs):.1f}%" if costs else "")
            t["all_rounds_met"] = all(v <= thr for v in costs)
            t["no_round_met"] = not any(v <= thr for v in costs)
        targets.append(t)
    m1k = next((c for c in conns if c["proxy"] == "meshguard-step4" and c["connections"] == 1000), None)
    t = {"id": "rss_1000_connections", "target": "meshguard under 20 MB resident with 1,000 open connections",
         "threshold": RSS_TARGET_MB}
    if m1k and m1k["rss_kb"] and m1k["note"].startswith("open=1000 "):
        mb = m1k["rss_kb"] * 1024 / 1e6
        t.update(value=mb, met=mb < RSS_TARGET_MB, shown=f"{mb:.1f} MB (target < {RSS_TARGET_MB:g} MB)",
                 spread="", all_rounds_met=mb < RSS_TARGET_MB, no_round_met=mb >= RSS_TARGET_MB)
    else:
        t.update(value=None, met=None, note="not measured" if not m1k else m1k["note"])
    targets.append(t)
    return targets


def read_mem(work):
    """mem.tsv: NAME ROUND idle_kb peak_kb steady_kb after_kb upstream_conns loadavg -> medians by name."""
    path = os.path.join(work, "mem.tsv")
    rows = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                name, rnd, idle, peak, steady, after, up, load = line.rstrip("\n").split("\t")
                text = open(os.path.join(work, f"{name}.{rnd}.load")).read()
                w = parse_wrk(text)
                rows.setdefault(name, []).append({
                    "round": int(rnd), "idle_kb": int(idle), "peak_kb": int(peak), "steady_kb": int(steady),
                    "after_kb": int(after), "upstream_conns": int(up), "loadavg": float(load),
                    "rps": w["rps"], "non_2xx": w["non_2xx"], "socket_errors": w["socket_errors"]})
    out = {}
    for name, rs in rows.items():
        out[name] = {k: med([r[k] for r in rs]) for k in
                     ("idle_kb", "peak_kb", "steady_kb", "after_kb", "upstream_conns", "rps")}
        out[name]["rounds"] = len(rs)
        out[name]["errors"] = sum(r["non_2xx"] + r["socket_errors"] for r in rs)
        out[name]["per_round"] = rs
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    work, out_base = sys.argv[1], sys.argv[2]
    meta = read_meta(work)
    clk = int(meta["clk_tck"])
    measurements = read_measurements(work, clk)
    runs = aggregate(measurements)

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
    targets = compute_targets(runs, conns)
    skipped = {}
    path = os.path.join(work, "skipped.tsv")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                name, _, why = line.rstrip("\n").partition("\t")
                skipped[name] = why
    mem = read_mem(work)
    disturbed = [r["name"] for r in runs.values() if r["disturbed"]]
    record = {"meta": meta, "runs": list(runs.values()), "connections": conns, "targets": targets,
              "disturbed_runs": disturbed, "memory_under_load": mem, "skipped": skipped}
    with open(out_base + ".json", "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")

    rounds = meta.get("rounds", "1")
    L = []
    L.append(f"# meshguard benchmark, {meta['date']}")
    L.append("")
    L.append(f"`{meta['command']}`: {rounds} rounds; in each, every configuration measured for {meta['duration']} s "
             f"after a {meta['warmup']} s warm-up, {meta['conns']} connections, {meta['threads']} load-generator "
             f"thread(s) (wrk; HTTP/2: h2load -c{meta['conns']} -m{meta['h2_streams']}). Proxy pinned to core "
             f"{meta['proxy_cpu']}; load generator and nginx upstream share core {meta['load_cpu']}. Fresh-token "
             f"runs walk through {int(meta['tokens']):,} distinct pre-minted RS256 tokens; every other request carries the "
             f"same `Authorization: Bearer` header (Istio's groups-scope.jwt), which the plain hops forward.")
    L.append("")
    L.append(f"Machine: {meta['nproc']} cores, {meta['cpu_model']}, {meta['kernel']}; {meta['haproxy']}; "
             f"{meta['wrk']}; {meta['h2load']}; {meta['nginx']}; {meta['rustc']}; meshguard {meta['meshguard_commit']} "
             f"({meta['meshguard_tree']}). Before the run: {meta.get('quiet_check', 'not checked')}; "
             f"load average at the end: {meta['loadavg_end']}.")
    L.append("")
    if disturbed:
        L.append(f"**WARNING: other processes used more than {OTHER_CPU_LIMIT:g}% of a core during: "
                 f"{', '.join(disturbed)}. Those numbers are skewed; run again on a quiet machine.**")
        L.append("")
    L.append("| configuration | protocol | token | requests/s (median) | range over rounds | p50 ms | p99 ms | "
             "proxy CPU µs/req | peak RSS MB | proxy core busy | load core busy | other CPU (max) | errors |")
    L.append("|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in runs.values():
        err = "none" if r["valid"] else f"non-2xx {r['non_2xx']}, socket {r['socket_errors']}"
        L.append(
            f"| {r['label']} (`{r['name']}`) | {r['protocol']} | {r['token']} | {r['rps']:,.0f} | "
            f"{r['rps_min']:,.0f} to {r['rps_max']:,.0f} | {fmt(r['p50_ms'], '.2f')} | {fmt(r['p99_ms'], '.2f')} | "
            f"{fmt(r['cpu_us_per_req'], '.1f')} | {r['peak_rss_kb'] * 1024 / 1e6:.1f} | "
            f"{fmt(r['proxy_core_busy_pct'], '.0f')}% | {fmt(r['load_core_busy_pct'], '.0f')}% | "
            f"{fmt(r['other_cpu_pct'], '.1f')}% | {err} |")
    L.append("")
    L.append("Medians over the rounds (p50/p99: the median of each round's percentile). CPU µs/req: the proxy "
             "process's utime+stime over the measured window divided by the requests completed (direct row: "
             "nginx's). Peak RSS: VmHWM, highest over the rounds. Core busy: non-idle share of each core over the "
             "window. Other CPU: what processes other than the proxy, nginx and the load generator used on the "
             "two cores meanwhile, in % of one core (tick-based accounting: a few % either side of 0 is noise).")
    L.append("")
    if skipped:
        L.append("Not measured: " + "; ".join(f"`{n}`: {w}" for n, w in skipped.items()) + ".")
        L.append("")
    peers = [p for p in PEERS if p[1] in runs or p[2] in runs or p[3] in runs]
    if peers:
        L.append(f"Side by side (requests/s, medians; every proxy with {meta.get('proxy_workers', '1')} worker(s) "
                 f"on core {meta['proxy_cpu']}: meshguard's default there, HAProxy `nbthread`, Envoy "
                 f"`--concurrency`; Envoy {meta.get('envoy', '?')} with the configuration istiod generates):")
        L.append("")
        L.append("| traffic | meshguard | HAProxy | Envoy | meshguard / HAProxy | meshguard / Envoy | "
                 "CPU µs/req meshguard / HAProxy / Envoy |")
        L.append("|---|---:|---:|---:|---:|---:|---|")
        for what, m, h, e in peers:
            def cell(n):
                if n in runs:
                    return f"{runs[n]['rps']:,.0f}" + ("" if runs[n]["valid"] else " (errors)")
                return "skipped" if n in skipped else "-"

            def ratio(a, b):
                if a in runs and b in runs:
                    return f"{runs[a]['rps'] / runs[b]['rps']:.2f}x"
                return "-"
            cpu = " / ".join(fmt(runs[n]["cpu_us_per_req"], ".1f") if n in runs else "-" for n in (m, h, e))
            L.append(f"| {what} | {cell(m)} | {cell(h)} | {cell(e)} | {ratio(m, h)} | {ratio(m, e)} | {cpu} |")
        L.append("")
    if any(n in runs for n in ("envoy-extauthz", "meshguard-extauthz-check", "meshguard-extauthz-latency")):
        L.append("meshguard as Envoy's external authorizer (medians; `envoy-extauthz`: Envoy and `meshguard "
                 "ext-authz` both on the proxy core, CPU µs/req and peak RSS are the two processes' sum; "
                 "`meshguard-extauthz-check`: h2load posts the same gRPC CheckRequest, step-4 token, to "
                 "`meshguard ext-authz`, latency per Check, with 50 connections × 10 streams, then one at a time):")
        L.append("")
        L.append("| what | requests/s | p50 ms | p99 ms | CPU µs/req | / Envoy native |")
        L.append("|---|---:|---:|---:|---:|---:|")
        native = runs.get("envoy-jwt")
        for what, n in EXT_AUTHZ:
            if n not in runs:
                continue
            r = runs[n]
            rel = f"{r['rps'] / native['rps']:.2f}x" if native else "-"
            L.append(f"| {what} (`{n}`) | {r['rps']:,.0f} | {fmt(r.get('p50_ms'), '.2f')} | "
                     f"{fmt(r.get('p99_ms'), '.2f')} | {fmt(r['cpu_us_per_req'], '.1f')} | {rel} |")
        L.append("")
    if mem:
        mc = meta.get("mem_conns", "1000")
        L.append(f"Resident memory under load: `wrk -t2 -c{mc} -d{meta.get('mem_duration', '10')}s`, every "
                 f"connection sending requests with the step-4 token, the proxy on one core (medians over the "
                 f"rounds, MB = 10^6 B; steady: median VmRSS over the second half of the run, sampled every 0.5 s; "
                 f"after: VmRSS 2 s after the load stopped; upstream connections: most open at once):")
        L.append("")
        L.append("| proxy | idle MB | peak MB (VmHWM) | steady MB | after MB | upstream connections | requests/s | "
                 "meshguard / this, steady |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        mg = mem.get("meshguard-mem")
        for label, n in MEM:
            x = mem.get(n)
            if not x:
                if n in skipped:
                    L.append(f"| {label} | skipped: {skipped[n]} | | | | | | |")
                continue
            ratio = f"{mg['steady_kb'] / x['steady_kb']:.2f}x" if mg else "-"
            L.append(f"| {label} (`{n}`) | {x['idle_kb'] * 1024 / 1e6:.1f} | {x['peak_kb'] * 1024 / 1e6:.1f} | "
                     f"{x['steady_kb'] * 1024 / 1e6:.1f} | {x['after_kb'] * 1024 / 1e6:.1f} | "
                     f"{x['upstream_conns']:.0f} | {fmt(x['rps'], ',.0f')} | {ratio} |")
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
    L.append("Performance targets (medians; the range is the same ratio round by round):")
    L.append("")
    L.append("| target | measured | range over rounds | proxy CPU per request, same pair | result |")
    L.append("|---|---|---|---|---|")
    for t in targets:
        if t["met"] is None:
            res = "not measured"
        elif t["met"]:
            res = "MET" if t.get("all_rounds_met") else "MET (not in every round)"
        else:
            res = "NOT MET" if t.get("no_round_met") else "NOT MET (met in some rounds)"
        cpu = ""
        if t.get("cpu_ratio") is not None:
            a, b = runs[t["numerator"]], runs[t["denominator"]]
            cpu = f"{a['cpu_us_per_req']:.1f} vs {b['cpu_us_per_req']:.1f} µs"
            if t["id"] == "policy_cost":
                cpu += f" ({100 * (a['cpu_us_per_req'] / b['cpu_us_per_req'] - 1):+.1f}%)"
            else:
                cpu += f" ({t['cpu_ratio']:.2f}x)"
        L.append(f"| {t['target']} | {t.get('shown', t.get('note', ''))} | {t.get('spread', '')} | {cpu} | **{res}** |")
    L.append("")
    other = []
    if "meshguard-step4-h2" in runs and "haproxy-jwt-h2" in runs:
        a, b = runs["meshguard-step4-h2"], runs["haproxy-jwt-h2"]
        other.append(f"- HTTP/2, token repeated: meshguard {a['rps']:,.0f} req/s vs HAProxy-JWT {b['rps']:,.0f} "
                     f"({a['rps'] / b['rps']:.2f}x); CPU per request {a['cpu_us_per_req']:.1f} vs "
                     f"{b['cpu_us_per_req']:.1f} µs.")
    if "meshguard-fresh" in runs and "meshguard-fresh-nocache" in runs:
        a, b = runs["meshguard-fresh"], runs["meshguard-fresh-nocache"]
        other.append(f"- Fresh tokens, default token cache vs no cache: {a['rps']:,.0f} vs {b['rps']:,.0f} req/s, "
                     f"{a['cpu_us_per_req']:.1f} vs {b['cpu_us_per_req']:.1f} µs CPU per request, peak RSS "
                     f"{a['peak_rss_kb'] * 1024 / 1e6:.1f} vs {b['peak_rss_kb'] * 1024 / 1e6:.1f} MB (with fresh "
                     f"tokens the cache only fills up).")
    tokens = int(meta.get("tokens", 0) or 0)
    fresh = [r for r in runs.values() if r["token"] == "fresh"]
    if tokens and fresh:
        most = max(r["max_requests"] for r in fresh)
        if most <= tokens:
            other.append(f"- Fresh-token runs: at most {most:,} requests in a measured run against {tokens:,} "
                         f"distinct tokens: no token came twice within a measured run, and those of the warm-up "
                         f"(taken from half-way down the list) came back tens of thousands of requests later, long "
                         f"after the default 10,000-entry cache had dropped them; the no-cache row is the check.")
        elif tokens < 50000:
            other.append(f"- Fresh-token runs: up to {most:,} requests in a measured run against only {tokens:,} "
                         f"distinct tokens: tokens came back within reach of meshguard's token cache, so the "
                         f"default-cache fresh row is not a fresh-token measurement (use TOKENS=100000).")
        else:
            other.append(f"- Fresh-token runs: up to {most:,} requests in a measured run against {tokens:,} "
                         f"distinct tokens, so a token came back at most {-(-most // tokens)} times, at least "
                         f"{tokens // 2:,} requests later, long after the default 10,000-entry cache has dropped it; the "
                         f"no-cache row is the check.")
    if "meshguard-step4" in runs and "meshguard-fresh-nocache" in runs:
        a, b = runs["meshguard-step4"], runs["meshguard-fresh-nocache"]
        other.append(f"- Cost of verifying a signature in meshguard (fresh without cache - repeated): "
                     f"{b['cpu_us_per_req'] - a['cpu_us_per_req']:.1f} µs CPU per request.")
    if "haproxy-jwt" in runs and "haproxy-plain" in runs:
        a, b = runs["haproxy-jwt"], runs["haproxy-plain"]
        other.append(f"- Cost of jwt_verify + claim checks in HAProxy (JWT - plain): "
                     f"{a['cpu_us_per_req'] - b['cpu_us_per_req']:.1f} µs CPU per request.")
    again = [f"{r['name']} ({r['retries']}x)" for r in runs.values() if r["retries"]]
    if again:
        other.append("- Measured again because other processes were busy during a first try: "
                     + ", ".join(again) + "; the table uses the last try.")
    h2 = [r["name"] for r in runs.values() if r["protocol"] == "h2c"]
    if h2:
        other.append(f"- h2load kept {int(meta['conns']) * int(meta['h2_streams'])} requests in flight "
                     f"({meta['conns']} connections x {meta['h2_streams']} streams) against wrk's {meta['conns']}: "
                     f"compare HTTP/2 latencies only with each other.")
    saturated = [r["name"] for r in runs.values()
                 if r["load_core_busy_pct"] and r["load_core_busy_pct"] > 95
                 and r["proxy_core_busy_pct"] and r["proxy_core_busy_pct"] < 90]
    if saturated:
        other.append("- Load core saturated while the proxy core had room (throughput there is bounded by the "
                     "load generator + upstream core): " + ", ".join(saturated) + ".")
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
