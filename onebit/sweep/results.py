"""The results of a sweep: one table (results.md, .json, .csv) and the plots a person looks at.

Plots (matplotlib PNG): hardware accuracy against LUT and estimated FPS against LUT, one panel per board, the
Pareto front (no other run has fewer LUT and more accuracy/FPS) marked and joined: one per network (training or
checkpoint) in its colour, and with several networks the front over all of them ringed.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from onebit.atomic import save_figure_atomic, write_text_atomic

COLUMNS = ("run", "status", "accuracy", "hw_accuracy", "mismatches", "fps", "lut", "bram_18k", "synth_lut",
           "fmax_mhz", "seconds", "error")


def rows_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run: the run's id and grid values, status, metrics, wall time, error."""
    rows = []
    for record in records:
        metrics = record.get("metrics") or {}
        status = record["status"] + (" (earlier)" if record.get("skipped") else "")
        rows.append({"run": f"{record['kind']}/{record['key']}", "kind": record["kind"],
                     "varying": record.get("varying") or {}, "status": status,
                     **{k: metrics.get(k) for k in COLUMNS if k in metrics}, "board": metrics.get("board"),
                     "seconds": record.get("seconds"), "error": record.get("error")})
    # the network a build is of (its training, or its checkpoint's file name): the plots' series
    for row, record in zip(rows, records):
        checkpoint = (record.get("params") or {}).get("checkpoint")
        row["model"] = (record.get("depends_on") or (Path(str(checkpoint)).stem if checkpoint else None)
                        if record["kind"] == "build" else record["key"])
    # a build's accuracy in software: its training's, for the table's accuracy column
    trained = {row["run"].split("/", 1)[1]: row.get("accuracy") for row in rows if row["kind"] == "train"}
    for row, record in zip(rows, records):
        if row["kind"] == "build" and record.get("depends_on") in trained and row.get("accuracy") is None:
            row["accuracy"] = trained[record["depends_on"]]
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if value < 1.5 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (fewer or equal LUT and more or equal value, one strictly),
    sorted by LUT."""
    front = []
    for i, (lut, value) in enumerate(points):
        dominated = any((l2 <= lut and v2 >= value) and (l2 < lut or v2 > value) for j, (l2, v2) in enumerate(points)
                        if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _plot(folder: Path, rows: list[dict[str, Any]]) -> list[str]:
    builds = [r for r in rows if r["kind"] == "build" and r.get("lut") is not None]
    if not builds:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    boards = sorted({str(r.get("board")) for r in builds})
    for metric, label, name in (("hw_accuracy", "hardware accuracy", "accuracy_vs_lut.png"),
                                ("fps", "estimated FPS", "fps_vs_lut.png")):
        usable = [r for r in builds if r.get(metric) is not None]
        if not usable:
            continue
        fig, axes = plt.subplots(1, len(boards), figsize=(4.5 * len(boards), 3.8), squeeze=False)
        for ax, board in zip(axes[0], boards):
            mine = [r for r in usable if str(r.get("board")) == board]
            points = [(float(r["lut"]), float(r[metric])) for r in mine]
            models = list(dict.fromkeys(str(r.get("model")) for r in mine))
            # one colour per network, each with its own front (its folding trade-off); with several networks the
            # front over all of them (the designs a person picks from) is ringed
            for colour, model in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 10, models):
                own = [p for p, r in zip(points, mine) if str(r.get("model")) == model]
                prefix = "" if len(models) == 1 else f"{model}: "
                ax.scatter([p[0] for p in own], [p[1] for p in own], s=18, color=colour, alpha=0.6,
                           label=f"{prefix}runs")
                front = pareto(own)
                ax.plot([own[i][0] for i in front], [own[i][1] for i in front], "-o", color=colour if len(models) > 1
                        else "tab:red", markersize=5, label=f"{prefix}Pareto front")
            if len(models) > 1 and points:
                front = pareto(points)
                ax.scatter([points[i][0] for i in front], [points[i][1] for i in front], s=110, facecolors="none",
                           edgecolors="black", label="front over all")
            ax.set_title(board)
            ax.set_xlabel("LUT (estimated)")
            ax.set_ylabel(label)
            if metric == "fps":
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"{label} against LUT, per board")
        fig.tight_layout()
        save_figure_atomic(fig, folder / name)
        plt.close(fig)
        written.append(name)
    return written


def write_results(folder: Path, name: str, records: list[dict[str, Any]], seconds: float) -> None:
    rows = rows_of(records)
    counts = {status: sum(1 for r in records if r["status"] == status) for status in ("finished", "failed", "not run")}
    summary = {"format": "onebit-sweep-results", "version": 1, "runs": len(records), **counts,
               "wall_seconds": round(seconds, 1),
               "run_seconds": round(sum(float(r.get("seconds") or 0) for r in records if not r.get("skipped")), 1)}
    write_text_atomic(folder / "results.json", json.dumps({"summary": summary, "rows": rows}, indent=2,
                                                          default=str) + "\n")
    buffer = io.StringIO()
    axes = sorted({k for r in rows for k in r["varying"]})
    writer = csv.DictWriter(buffer, fieldnames=["run", "kind", *axes, *COLUMNS[1:], "board"], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, **row["varying"]})
    write_text_atomic(folder / "results.csv", buffer.getvalue())
    plots = _plot(folder, rows)
    lines = [f"# Sweep {name}", "",
             f"{summary['runs']} runs: {counts['finished']} finished, {counts['failed']} failed, {counts['not run']} "
             f"not run; wall time {summary['wall_seconds']:.0f} s for {summary['run_seconds']:.0f} s of runs "
             "(this driver's runs, earlier ones not counted).", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in COLUMNS) + " |")
    lines += [""] + [f"![{p}]({p})" for p in plots]
    write_text_atomic(folder / "results.md", "\n".join(lines) + "\n")
