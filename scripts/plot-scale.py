#!/usr/bin/env python3
"""Draws docs/img/scale.svg from `vireo bench cluster -o json` results: heartbeat p99, controller
CPU and resident memory against the number of hosts, one panel each, one line per store.

    scripts/plot-scale.py OUT.svg RESULT.json [RESULT.json ...]
"""
import json
import sys

out, paths = sys.argv[1], sys.argv[2:]
runs = sorted((json.load(open(p)) for p in paths), key=lambda r: r["hosts"])
stores = sorted({r["store"] for r in runs}, key=lambda s: (s != "sqlite", s))
colours = ["#246", "#c80", "#393", "#939"]
panels = [
    ("heartbeat p99 (ms)", "heartbeatP99Ms", 50, "target ≤ 50 ms"),
    ("controller CPU (cores)", "controllerCores", 1, "target ≤ 1 core"),
    ("controller memory (MiB)", "controllerRSSMiB", 2048, "target ≤ 2 GiB"),
]
W, H, PAD, GAP = 300, 220, 48, 24
width = len(panels) * (W + GAP) + GAP
parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{H + 70}" '
         'font-family="sans-serif" font-size="11">',
         f'<rect width="{width}" height="{H + 70}" fill="white"/>']
xs = [r["hosts"] for r in runs]
xmax = max(xs) * 1.05
for i, (title, key, target, note) in enumerate(panels):
    ox = GAP + i * (W + GAP)
    ymax = max(max(r[key] for r in runs), target) * 1.15
    def px(x): return ox + PAD + (W - PAD - 8) * x / xmax
    def py(y): return 20 + (H - 40) * (1 - y / ymax)
    parts.append(f'<text x="{ox + W / 2}" y="14" text-anchor="middle" font-weight="bold">{title}</text>')
    parts.append(f'<line x1="{px(0)}" y1="{py(0)}" x2="{px(xmax)}" y2="{py(0)}" stroke="black"/>')
    parts.append(f'<line x1="{px(0)}" y1="{py(0)}" x2="{px(0)}" y2="{py(ymax)}" stroke="black"/>')
    for t in range(5):
        v = ymax * t / 4
        parts.append(f'<text x="{px(0) - 4}" y="{py(v) + 4}" text-anchor="end">{v:.3g}</text>')
    for x in xs:
        parts.append(f'<text x="{px(x)}" y="{py(0) + 14}" text-anchor="middle">{x:,}</text>')
    parts.append(f'<text x="{ox + W / 2}" y="{py(0) + 30}" text-anchor="middle">hosts (10 VMs each)</text>')
    parts.append(f'<line x1="{px(0)}" y1="{py(target)}" x2="{px(xmax)}" y2="{py(target)}" '
                 'stroke="#c33" stroke-dasharray="4 3"/>')
    parts.append(f'<text x="{px(xmax)}" y="{py(target) - 4}" text-anchor="end" fill="#c33">{note}</text>')
    for n, store in enumerate(stores):
        colour = colours[n % len(colours)]
        line = [(r["hosts"], r[key]) for r in runs if r["store"] == store]
        points = " ".join(f"{px(x)},{py(y)}" for x, y in line)
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in line:
            parts.append(f'<circle cx="{px(x)}" cy="{py(y)}" r="3" fill="{colour}"/>')
            parts.append(f'<text x="{px(x) + 5}" y="{py(y) - 6 - 12 * n}" fill="{colour}">{y:.3g}</text>')
        if i == 0:
            parts.append(f'<text x="{px(0) + 8}" y="{34 + 14 * n}" fill="{colour}">— {store}</text>')
parts.append("</svg>")
open(out, "w").write("\n".join(parts) + "\n")
