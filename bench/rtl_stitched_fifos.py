"""The FIFO depths FINN stitches are the depths onebit sized, and the design at those depths meets FINN's estimate.

For TFC (FINN's SetFolding at 10,000 FPS) and a narrow CNV (the tests' structure): `onebit build model.pt --mvau rtl`
through finn-plus' whole Vivado flow under the tests' FAKE Xilinx tree (tests/hw/fake_xilinx.py: the Tcl runs
under tclsh with Vivado's commands recorded; nothing is synthesized; ONEBIT_SKIP_RTLSIM=1 because XSI is not
faked), then:
  * onebit's sized depths (report.json artifacts.fifo_depths) beside the StreamingFIFO depths of the final
    dataflow partition FINN stitched (and FINN's report/fifo_sizing.json);
  * rtl_accelerator on N test images at those stitched depths: steady-state cycles per image / FINN's
    estimated bottleneck, mismatches against the bit-exact accelerator model;
  * the same Verilator build at the rule's depths (FINN's default 2, one MVAU input vector) and with every FIFO
    2 deep (what FINN's force_minimal_fifos stitches): what the design would run at without the sizing.

    python bench/rtl_stitched_fifos.py                   # tfc and cnv, 1,000 images each
    python bench/rtl_stitched_fifos.py --cases tfc --images 200

Writes bench/results/rtl_stitched_fifos.{json,md}; a rerun reuses the builds in --work (default build/stitch_bench).
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

CASES = {  # name: (model, train options, build options)
    "tfc": ("tfc", ["--limit-train", "2000"], ["--target-fps", "10000"]),
    "cnv": ("cnv", ["--limit-train", "500", "--arch", "channels=[16,16,32,32,64,64]", "--arch", "fc=[64,64]"],
            ["--target-fps", "10000"]),
}


def fake_environment(work: Path) -> dict[str, str]:
    """The environment of a user who sourced the fake tree's settings64.sh (the tests' fake; see the docstring)."""
    sys.path.insert(0, str(REPO / "tests" / "hw"))
    from fake_xilinx import FAKE_MARK, make_fake_xilinx

    fake = make_fake_xilinx(work / "fake" / "Xilinx")
    deps = work / "fake" / "finn_deps"
    for name in ("finn-hlslib", "attention-hlslib", "board_files"):
        (deps / name).mkdir(parents=True, exist_ok=True)
        (deps / name / "FAKE.txt").write_text(FAKE_MARK + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("FINN_RTLLIB", "FINN_CUSTOM_HLS", "XILINX_LOCAL_USER_DATA",
                                                           "FINN_XSI")}
    env.update(fake.environment(), FINN_DEPS=str(deps), ONEBIT_SKIP_RTLSIM="1", PYTHONPATH=str(REPO))
    return env


def build(case: str, work: Path, env: dict[str, str]) -> Path:
    model, train, options = CASES[case]
    folder = work / case
    checkpoint = folder / f"{model}.pt"
    if not checkpoint.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "quant_models.train", "--model", model, "--dataset", "fashion-mnist",
                        "--epochs", "1", "--seed", "0", "--out", str(checkpoint), "--quiet", *train],
                       check=True, cwd=REPO, env=env)
    out = folder / "build"
    if not (out / "report.json").is_file():
        subprocess.run([sys.executable, "-m", "onebit", "build", str(checkpoint), "--out", str(out), "--mvau", "rtl",
                        "--verify-samples", "20", "--levels", "rtl_accelerator", *options],
                       check=True, cwd=REPO, env=env)
    return out


def measure(case: str, out: Path, n: int) -> dict[str, Any]:
    import numpy as np
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from hw.check.rtl_accelerator import run_rtl_accelerator
    from hw.check.verify import load_test_set
    from hw.rtl.stitch import RTLAccelerator
    from quant_models.checkpoint import load_checkpoint

    report = json.loads((out / "report.json").read_text())
    sized = report["artifacts"]["fifo_depths"]
    child = ModelWrapper(str(out / "finn" / "dataflow_partition.onnx"))
    stitched = [int(getCustomOp(node).get_nodeattr("depth")) for node in child.graph.node
                if node.op_type.startswith("StreamingFIFO")]
    finn_report = json.loads((out / "report" / "fifo_sizing.json").read_text())["fifo_depths"]
    _, meta = load_checkpoint(out / "model.pt")
    images = load_test_set(meta, n)[0]
    started = time.perf_counter()
    result = run_rtl_accelerator(out, images, progress=True)
    seconds = time.perf_counter() - started
    default = RTLAccelerator(child, artifacts=out / "hw" / "rtl_accelerator", fifo_sizing="rule")
    first = default.design.nodes[0]
    zeros = np.zeros((12, first.in_beats, default.design.in_width // 8), np.uint8)  # timing is data-independent
    default.run(zeros)
    minimal = RTLAccelerator(child, artifacts=out / "hw" / "rtl_accelerator", fifo_depth=2)
    minimal.run(zeros)
    return {
        "case": case, "images": int(len(images)), "sim_seconds": round(seconds, 1),
        "onebit_sized_depths": sized.get("depths"), "stitched_depths": stitched,
        "finn_fifo_sizing_report": list(finn_report.values()),
        "stitched_equals_sized": stitched == list((sized.get("depths") or {}).values()) == list(finn_report.values()),
        "fifo_source": result["fifo_source"], "mismatches": len(result["mismatching"]),
        "cycles_per_image": result["cycles_per_image"], "estimated_bottleneck_cycles": result["estimated_bottleneck_cycles"],
        "ratio": result["cycles_per_image"] / result["estimated_bottleneck_cycles"],
        "default_depths": default.depths, "default_depths_cycles_per_image": default.last.cycles_per_image,
        "default_depths_ratio": default.last.cycles_per_image / result["estimated_bottleneck_cycles"],
        "minimal_depths_cycles_per_image": minimal.last.cycles_per_image,
        "minimal_depths_ratio": minimal.last.cycles_per_image / result["estimated_bottleneck_cycles"],
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["# FIFO depths FINN stitches = onebit's sized depths (fake Vivado flow, `--mvau rtl`)", "",
             "`python bench/rtl_stitched_fifos.py`; builds under the tests' FAKE Xilinx tree (nothing synthesized), "
             "rtl_accelerator in Verilator at the stitched depths.", "",
             "| case | images | stitched = sized | stitched depths | mismatches | cycles/image | FINN estimate | ratio "
             "| at the rule's depths (2, MVAU vector) | ratio | every FIFO 2 deep (force_minimal_fifos) | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['images']:,} | {r['stitched_equals_sized']} | {r['stitched_depths']} | "
                     f"{r['mismatches']} | {r['cycles_per_image']:.1f} | {r['estimated_bottleneck_cycles']} | "
                     f"{r['ratio']:.3f} | {r['default_depths_cycles_per_image']:.1f} | {r['default_depths_ratio']:.3f} | "
                     f"{r.get('minimal_depths_cycles_per_image', float('nan')):.1f} | "
                     f"{r.get('minimal_depths_ratio', float('nan')):.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="tfc,cnv")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=REPO / "build" / "stitch_bench")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    env = fake_environment(work)
    os.environ.update(env)
    rows = []
    for case in args.cases.split(","):
        out = build(case, work, env)
        rows.append(measure(case, out, args.images))
        print(markdown(rows[-1:]), flush=True)
    results = REPO / "bench" / "results"
    previous = results / "rtl_stitched_fifos.json"  # rows of cases not run this time are kept
    if previous.is_file():
        kept = [r for r in json.loads(previous.read_text()) if r["case"] not in {row["case"] for row in rows}]
        rows = sorted(kept + rows, key=lambda r: list(CASES).index(r["case"]) if r["case"] in CASES else 99)
    write_text_atomic(previous, json.dumps(rows, indent=1))
    write_text_atomic(results / "rtl_stitched_fifos.md", markdown(rows))
    return 0 if all(r["stitched_equals_sized"] and r["mismatches"] == 0 and r["ratio"] <= 1.05 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
