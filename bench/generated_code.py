"""The code FINN generates, executed: rtl_nodes (Verilator) and cppsim (FINN's C++ simulation) (issue #10).

By the commands a user types, on Fashion-MNIST:

1. TFC-w1a1 (1 epoch on 10,000 images): `python export/to_finn.py model.pt --levels rtl_nodes,cppsim --node-samples 10000
   --verify-samples 0`: every HLS node in cppsim on all 10,000 test images' real inputs + random frames
   (TFC has no RTL nodes: rtl_nodes says so)
2. CNV-w1a1 (1 epoch on 5,000 images): `python export/to_finn.py model.pt --levels rtl_nodes
   --node-samples 100`: every RTL node in Verilator on 100 images' real inputs + random frames; then
   `onebit validate BUILD --levels cppsim --node-samples 20`: every HLS node (MVAU_hls, Pool_hls) in cppsim
3. `onebit validate CNV_BUILD --levels rtl_nodes --node-samples 100` again: unchanged designs, nothing
   compiled (the Verilator cache), to time a rebuild

cppsim needs finn-hlslib and the ap_int headers (--hlslib, --ap-int, or ONEBIT_FINN_HLSLIB/ONEBIT_AP_INT);
without them the cppsim rows say skipped. Results: bench/results/generated_code.{json,md}.

    python bench/generated_code.py --hlslib ~/src/finn-hlslib --ap-int ~/src/HLS_arbitrary_Precision_Types/include

A rerun skips the steps whose outputs exist in --work (default build/generated_code). `--render-only --note TEXT`
rewrites the Markdown from the JSON with notes (kept across runs).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from onebit.atomic import write_text_atomic  # noqa: E402
from onebit.errors import OnebitError, cli_errors  # noqa: E402

RESULTS = REPO / "bench" / "results"
TRAIN = {"tfc": ["--epochs", "1", "--limit-train", "10000"], "cnv": ["--epochs", "1", "--limit-train", "5000"]}


def _run(command: list[str], log: Path, env: dict[str, str], allowed: tuple[int, ...] = (0,)) -> tuple[float, int]:
    started = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    if code not in allowed:
        tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise OnebitError(f"`{' '.join(command)}` exited {code}: {tail[0]} (full log {log})")
    return time.perf_counter() - started, code


def _checkpoint(model: str, work: Path, env: dict[str, str]) -> Path:
    checkpoint = work / model / "model.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    if not checkpoint.is_file():
        _run([sys.executable, "-m", "quant_models.train", "--model", model, "--dataset", "fashion-mnist",
              "--seed", "0", "--quiet", *TRAIN[model], "--out", str(checkpoint)], checkpoint.parent / "train.log", env)
    return checkpoint


def _build(model: str, checkpoint: Path, levels: str, node_samples: int, verify: int, env: dict[str, str]) -> dict:
    build = checkpoint.parent / "build"
    seconds = None
    if not (build / "report.json").is_file():
        seconds, _ = _run([sys.executable, "export/to_finn.py", str(checkpoint), "--board", "Pynq-Z1", "--out",
                           str(build), "--verify-samples", str(verify), "--levels", levels, "--node-samples",
                           str(node_samples), "--no-progress"], checkpoint.parent / "build.log", env, allowed=(0, 1))
    report = json.loads((build / "report.json").read_text())
    return {"build": str(build), "build_seconds": seconds, "levels": report["verification"]["levels"]}


def _validate(build: Path, levels: str, node_samples: int, env: dict[str, str], tag: str) -> dict:
    seconds, code = _run([sys.executable, "-m", "onebit", "validate", str(build), "--backend", "model", "--limit",
                          "1000", "--levels", levels, "--node-samples", str(node_samples)],
                         build.parent / f"validate-{tag}.log", env, allowed=(0, 1))
    report = json.loads((build / "validation" / "validation.json").read_text())
    return {"seconds": seconds, "exit": code, "levels": report.get("levels", {})}


def _level_row(model: str, level: str, entry: dict, command: str) -> dict[str, Any]:
    nodes = entry.get("nodes") or []
    row = {"model": model, "level": level, "command": command, "executed": entry.get("executed", False),
           "reason": entry.get("reason"), "samples": entry.get("samples"), "seconds": entry.get("seconds"),
           "mismatching_node_outputs": entry.get("integer_mismatches"), "nodes": nodes, "how": entry.get("how")}
    return row


def render(rows: list[dict[str, Any]], rebuild: dict[str, Any] | None, sources: dict[str, str],
           notes: list[str] | None = None) -> str:
    lines = ["# FINN's generated code, executed (rtl_nodes: Verilator; cppsim: FINN's C++ simulation)", "",
             "Produced by `python bench/generated_code.py`. Every node's output is compared with FINN's Python "
             "execution of the same node on the same inputs: its real inputs for the test images (captured from "
             "the HW-layer graph) plus random frames over its input datatype (all-max, all-min, uniform).", "",
             f"Sources: {', '.join(f'{k} {v}' for k, v in sources.items())}", "",
             "| model | level | images per node | nodes | mismatching node outputs | seconds | command |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["executed"]:
            lines.append(f"| {r['model']} | {r['level']} | {r['samples']} | {len(r['nodes'])} | "
                         f"{r['mismatching_node_outputs']} | {r['seconds']} | `{r['command']}` |")
        else:
            lines.append(f"| {r['model']} | {r['level']} | {r['reason']} | | | | `{r['command']}` |")
    lines += ["", "## Per node", "", "| model | level | node | frames (images + random) | mismatching | status | time |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        for n in r["nodes"]:
            timing = ", ".join(f"{k.replace('_', ' ')} {n[k]}" for k in
                               ("verilator_build", "compile_seconds", "sim_seconds", "cycles") if k in n)
            lines.append(f"| {r['model']} | {r['level']} | {n['node']} | {n.get('images')} + {n.get('random_frames')} | "
                         f"{n.get('mismatching_images')} / {n.get('mismatching_random')} | {n['status']} | {timing} |")
    if rebuild:
        lines += ["", f"Unchanged designs validated again: {rebuild['compiled']} of {rebuild['nodes']} Verilator "
                      f"builds compiled; rtl_nodes took {rebuild['seconds']} s vs {rebuild['first_seconds']} s the "
                      f"first time ({rebuild['ratio']:.2f}x)."]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "build" / "generated_code")
    parser.add_argument("--hlslib", help="finn-hlslib folder (else $ONEBIT_FINN_HLSLIB)")
    parser.add_argument("--ap-int", help="ap_int headers folder (else $ONEBIT_AP_INT)")
    parser.add_argument("--models", default="tfc,cnv")
    parser.add_argument("--tfc-samples", type=int, default=10000)
    parser.add_argument("--cnv-rtl-samples", type=int, default=100)
    parser.add_argument("--cnv-cppsim-samples", type=int, default=20)
    parser.add_argument("--sources", help="how the finn-hlslib / ap_int folders were obtained (e.g. repository and "
                        "commit), for the results' Sources line; default: their paths")
    parser.add_argument("--note", action="append", default=[], help="a note for the results (repeatable); "
                        "the notes of earlier runs stay unless --clear-notes")
    parser.add_argument("--clear-notes", action="store_true")
    parser.add_argument("--render-only", action="store_true", help="rewrite the .md from the .json (with --sources/"
                        "--note), running nothing")
    args = parser.parse_args(argv)
    previous = RESULTS / "generated_code.json"
    old = json.loads(previous.read_text()) if previous.is_file() else {}
    notes = ([] if args.clear_notes else old.get("notes", [])) + args.note
    if args.render_only:
        if not old:
            raise OnebitError(f"{previous} does not exist; run the benchmark first")
        sources = {"finn-hlslib / ap_int": args.sources} if args.sources else old.get("sources", {})
        write_text_atomic(previous, json.dumps({**old, "sources": sources, "notes": notes}, indent=2))
        write_text_atomic(RESULTS / "generated_code.md", render(old["rows"], old.get("rebuild"), sources, notes))
        return 0
    env = dict(os.environ)
    if args.hlslib:
        env["ONEBIT_FINN_HLSLIB"] = str(Path(args.hlslib).resolve())
    if args.ap_int:
        env["ONEBIT_AP_INT"] = str(Path(args.ap_int).resolve())
    env.pop("ONEBIT_LEVELS", None)
    sources = ({"finn-hlslib / ap_int": args.sources} if args.sources else
               {"finn-hlslib": env.get("ONEBIT_FINN_HLSLIB", "not given"), "ap_int": env.get("ONEBIT_AP_INT", "not given")})
    rows, rebuild = [], None
    models = args.models.split(",")
    if "tfc" in models:
        ckpt = _checkpoint("tfc", args.work, env)
        tfc = _build("tfc", ckpt, "rtl_nodes,cppsim", args.tfc_samples, 0, env)
        command = f"export/to_finn.py --levels rtl_nodes,cppsim --node-samples {args.tfc_samples} --verify-samples 0"
        rows += [_level_row("TFC-w1a1", name, tfc["levels"].get(name, {}), command) for name in ("rtl_nodes", "cppsim")]
    if "cnv" in models:
        ckpt = _checkpoint("cnv", args.work, env)
        cnv = _build("cnv", ckpt, "rtl_nodes", args.cnv_rtl_samples, 200, env)
        rows.append(_level_row("CNV-w1a1", "rtl_nodes", cnv["levels"].get("rtl_nodes", {}),
                               f"export/to_finn.py --levels rtl_nodes --node-samples {args.cnv_rtl_samples}"))
        build = Path(cnv["build"])
        cpp = _validate(build, "cppsim", args.cnv_cppsim_samples, env, "cppsim")
        rows.append(_level_row("CNV-w1a1", "cppsim", cpp["levels"].get("cppsim", {}),
                               f"onebit validate --levels cppsim --node-samples {args.cnv_cppsim_samples}"))
        again = _validate(build, "rtl_nodes", args.cnv_rtl_samples, env, "rtl-again")["levels"].get("rtl_nodes", {})
        first = cnv["levels"].get("rtl_nodes", {})
        if again.get("executed") and first.get("executed"):
            rebuild = {"nodes": len(again["nodes"]), "seconds": again["seconds"], "first_seconds": first["seconds"],
                       "compiled": sum(1 for n in again["nodes"] if str(n.get("verilator_build", "")).startswith("compiled")),
                       "ratio": again["seconds"] / first["seconds"] if first["seconds"] else 0.0}
    RESULTS.mkdir(parents=True, exist_ok=True)
    if old:  # keep the rows of the models not run this time (`--models tfc` then `--models cnv`)
        ran = {r["model"] for r in rows}
        rows = [r for r in old.get("rows", []) if r["model"] not in ran] + rows
        rebuild = rebuild or (old.get("rebuild") if "CNV-w1a1" not in ran else None)
    rows.sort(key=lambda r: (r["model"] != "TFC-w1a1", r["level"] != "rtl_nodes"))
    write_text_atomic(previous, json.dumps({"rows": rows, "rebuild": rebuild, "sources": sources, "notes": notes},
                                           indent=2))
    write_text_atomic(RESULTS / "generated_code.md", render(rows, rebuild, sources, notes))
    print((RESULTS / "generated_code.md").read_text())
    bad = [r for r in rows if r["executed"] and r["mismatching_node_outputs"]]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
