"""PNG and HTML reports drawn from a JSON report document (matplotlib, Agg backend).

Charts: latency over time (p50/p95/p99 per second, SLO limits as dashed lines, the warm-up
shaded), the latency CDF (log scale, open-loop runs also show the service-time CDF so the
coordinated-omission gap is visible), and for a sweep the latency-versus-throughput curve with
the SLO lines and the best passing rate. Works from the document alone, so a saved JSON report
can be re-rendered later.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from loadgen.histogram import Histogram


def _figure(doc: dict[str, Any]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = doc.get("sweep")
    n = 3 if sweep else 2
    fig, axes = plt.subplots(n, 1, figsize=(10, 3.6 * n), constrained_layout=True)
    limits = [
        (o["stat"], o["limit"] / 1000)
        for o in ((doc.get("slo") or {}).get("objectives") or [])
        if o["unit"] == "us"
    ]
    colors = {"p50": "tab:green", "p95": "tab:orange", "p99": "tab:red"}

    ax = axes[0]
    secs = doc["per_second"]
    ts = [s["t_s"] for s in secs]
    for key, c in colors.items():
        ys = [s[f"{key}_us"] / 1000 if s[f"{key}_us"] is not None else float("nan") for s in secs]
        ax.plot(ts, ys, label=key, color=c, marker=".", linewidth=1)
    for stat, limit_ms in limits:
        ax.axhline(limit_ms, linestyle="--", color="grey", linewidth=1)
        ax.annotate(f"SLO {stat}", (0, limit_ms), fontsize=8, color="grey", va="bottom")
    if doc["warmup"]["duration_s"]:
        ax.axvspan(0, doc["warmup"]["duration_s"], color="grey", alpha=0.12, label="warm-up")
    ax.set_yscale("log")
    ax.set_xlabel("seconds into the run (by intended send time)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"Latency over time — {doc['mode']}")
    ax2 = ax.twinx()
    ax2.bar(ts, [s["ok"] for s in secs], color="tab:blue", alpha=0.12, width=1.0)
    ax2.set_ylabel("successful requests per second", color="tab:blue")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.legend(loc="upper left", fontsize=8)

    ax = axes[1]
    h = Histogram.from_dict(doc["histograms"]["latency_us"])
    if h.count:
        xs, ps = zip(*h.cdf(), strict=True)
        ax.plot([x / 1000 for x in xs], ps, label=f"latency ({doc['latency_origin']} send)")
    for stat, limit_ms in limits:
        ax.axvline(limit_ms, linestyle="--", color="grey", linewidth=1)
        ax.annotate(f"SLO {stat}", (limit_ms, 0.02), fontsize=8, color="grey", rotation=90)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of requests ≤ x")
    ax.set_title("Latency CDF (measured window)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)

    if sweep:
        ax = axes[2]
        steps = sorted(sweep["steps"], key=lambda s: s["throughput_rps"] or 0)
        for key, c in colors.items():
            ax.plot(
                [s["throughput_rps"] for s in steps],
                [(s[f"{key}_us"] or float("nan")) / 1000 for s in steps],
                label=key,
                color=c,
                marker="o",
            )
        for s in steps:
            if not s["passed"]:
                ax.plot(s["throughput_rps"], (s["p99_us"] or 0) / 1000, "x", color="black")
        for stat, limit_ms in limits:
            ax.axhline(limit_ms, linestyle="--", color="grey", linewidth=1)
            ax.annotate(f"SLO {stat}", (0, limit_ms), fontsize=8, color="grey", va="bottom")
        if sweep["best_rps"]:
            ax.axvline(sweep["best_rps"], color="tab:blue", linewidth=1)
            ax.annotate(
                f"best {sweep['best_rps']:.0f} req/s", (sweep["best_rps"], ax.get_ylim()[0])
            )
        ax.set_yscale("log")
        ax.set_xlabel("throughput (req/s); x = step failed")
        ax.set_ylabel("latency (ms)")
        ax.set_title("Sweep: latency vs throughput")
        ax.legend(loc="upper left", fontsize=8)
    return fig


def png_bytes(doc: dict[str, Any]) -> bytes:
    import matplotlib.pyplot as plt

    fig = _figure(doc)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_png(doc: dict[str, Any], path: Path) -> None:
    path.write_bytes(png_bytes(doc))


def write_html(doc: dict[str, Any], path: Path) -> None:
    """One self-contained page: summary, SLO table, charts, and the JSON report."""
    from loadgen.report import slo_table, summary_text

    img = base64.b64encode(png_bytes(doc)).decode()
    slo = ""
    if doc.get("slo"):
        verdict = "PASSED" if doc["slo"]["passed"] else "FAILED"
        slo = f"<h2>SLO {verdict}</h2><pre>{html.escape(slo_table(doc))}</pre>"
    slim = {k: v for k, v in doc.items() if k not in ("histograms", "per_second")}
    path.write_text(
        "<!doctype html><meta charset='utf-8'><title>loadgen report</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "pre{background:#f6f6f6;padding:8px;overflow:auto}</style>"
        f"<h1>loadgen report — {html.escape(doc['mode'])}</h1>"
        f"<pre>{html.escape(summary_text(doc))}</pre>{slo}"
        f"<img alt='charts' src='data:image/png;base64,{img}' style='width:100%'>"
        f"<details><summary>report JSON (without histograms)</summary>"
        f"<pre>{html.escape(json.dumps(slim, indent=2))}</pre></details>"
    )
