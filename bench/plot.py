#!/usr/bin/env python3
"""Chart one bench/run result: throughput and p99 latency per configuration.

usage: python3 bench/plot.py bench/results/<run>.json [OUT.svg|OUT.png]

Uses matplotlib when it is importable (`pip install matplotlib`); otherwise writes the same
two-panel horizontal bar chart as hand-made SVG with the standard library only. The default
output is the JSON's name with .svg.
"""
import json
import math
import os
import sys
from xml.sax.saxutils import escape

COLOURS = {"meshguard": "#2f6fb0", "haproxy": "#d9822b", "direct": "#7a7a7a"}


def family(name):
    for k in ("meshguard", "haproxy"):
        if name.startswith(k):
            return k
    return "direct"


def rows(record):
    out = []
    for r in record["runs"]:
        label = r["label"]
        extra = [x for x in (r["protocol"] if r["protocol"] != "HTTP/1.1" else "",
                             f"{r['token']} token" if r["token"] != "-" else "") if x]
        if extra:
            label += " (" + ", ".join(extra) + ")"
        out.append((label, r["name"], r["rps"], r.get("p99_ms"),
                    r.get("rps_min", r["rps"]), r.get("rps_max", r["rps"])))
    return out


def title(record):
    m = record["meta"]
    return (f"meshguard vs HAProxy {m['haproxy'].split()[2] if len(m['haproxy'].split()) > 2 else ''}: "
            f"{m['date']}, {m['conns']} connections, {m.get('rounds', '1')} rounds x {m['duration']} s, "
            f"proxy on 1 core")


def with_matplotlib(record, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = rows(record)[::-1]
    labels = [d[0] for d in data]
    colours = [COLOURS[family(d[1])] for d in data]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 0.45 * len(data) + 1.8), sharey=True)
    y = range(len(data))
    a1.barh(y, [d[2] for d in data], color=colours,
            xerr=[[d[2] - d[4] for d in data], [d[5] - d[2] for d in data]], ecolor="#333333", capsize=2)
    a1.set_yticks(list(y), labels, fontsize=9)
    a1.set_xlabel("requests/s, median and range over the rounds (higher is better)")
    for i, d in enumerate(data):
        a1.text(d[5], i, f" {d[2]:,.0f}", va="center", fontsize=8)
    a2.barh(y, [d[3] or 0 for d in data], color=colours)
    a2.set_xscale("log")
    a2.set_xlabel("p99 latency, ms, log scale (lower is better)")
    for i, d in enumerate(data):
        if d[3] is not None:
            a2.text(d[3], i, f" {d[3]:.2f}", va="center", fontsize=8)
    for a in (a1, a2):
        a.margins(x=0.18)
        a.grid(axis="x", alpha=0.3)
    fig.suptitle(title(record), fontsize=10)
    fig.tight_layout()
    fig.savefig(out)


def by_hand(record, out):
    data = rows(record)
    label_w, bar_w, gap, row_h, top = 360, 300, 120, 24, 56
    width = label_w + 2 * (bar_w + gap)
    height = top + row_h * len(data) + 40
    max_rps = max(d[5] for d in data) or 1
    # p99 on a log scale from 0.1 ms: HTTP/2 runs keep 10x more requests in flight
    floor = 0.1
    max_p99 = max(max((d[3] or 0) for d in data), floor * 10)

    def p99_width(v):
        return bar_w * math.log10(max(v, floor) / floor) / math.log10(max_p99 / floor)

    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'font-family="sans-serif" font-size="12">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="10" y="20" font-size="13">{escape(title(record))}</text>']
    x1, x2 = label_w, label_w + bar_w + gap
    s.append(f'<text x="{x1}" y="{top - 12}">requests/s, median and range over rounds (higher is better)</text>')
    s.append(f'<text x="{x2}" y="{top - 12}">p99 latency, ms, log scale from 0.1 ms (lower is better)</text>')
    for i, (label, name, rps, p99, lo, hi) in enumerate(data):
        y = top + i * row_h
        c = COLOURS[family(name)]
        s.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{escape(label)}</text>')
        w = bar_w * rps / max_rps
        s.append(f'<rect x="{x1}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{c}"/>')
        xl, xh = x1 + bar_w * lo / max_rps, x1 + bar_w * hi / max_rps
        s.append(f'<line x1="{xl:.1f}" y1="{y + 12}" x2="{xh:.1f}" y2="{y + 12}" stroke="#333" stroke-width="1"/>')
        for xx in (xl, xh):
            s.append(f'<line x1="{xx:.1f}" y1="{y + 8}" x2="{xx:.1f}" y2="{y + 16}" stroke="#333" stroke-width="1"/>')
        s.append(f'<text x="{max(x1 + w, xh) + 4:.1f}" y="{y + 15}">{rps:,.0f}</text>')
        if p99 is not None:
            w = p99_width(p99)
            s.append(f'<rect x="{x2}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{c}"/>')
            s.append(f'<text x="{x2 + w + 4:.1f}" y="{y + 15}">{p99:.2f}</text>')
    y = top + row_h * len(data) + 22
    x = 10
    for k, c in COLOURS.items():
        s.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" fill="{c}"/>')
        s.append(f'<text x="{x + 16}" y="{y}">{k}</text>')
        x += 110
    s.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(s) + "\n")


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    src = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) == 3 else os.path.splitext(src)[0] + ".svg"
    with open(src) as f:
        record = json.load(f)
    if not record.get("runs"):
        sys.exit("no runs in " + src)
    try:
        with_matplotlib(record, out)
        how = "matplotlib"
    except ImportError:
        if not out.endswith(".svg"):
            sys.exit("matplotlib is not installed: only .svg output is available")
        by_hand(record, out)
        how = "hand-made SVG"
    print(f"wrote {out} ({how})")


if __name__ == "__main__":
    main()
