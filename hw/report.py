"""report.md + report.json (+ resources.png) of a build: what was built, what it costs, whether it is exact.

Numbers come from FINN's own estimate reports (report/estimate_layer_cycles.json,
estimate_layer_resources.json, estimate_network_performance.json); FPS and latency are recomputed at the
board clock from FINN's cycle counts (FINN's network estimate uses the config's synth clock, the same here).
report.json is written last and atomically (hw/pipeline.py, after the deployment package): its presence marks a
finished build.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hw.finn.build import BuildResult
from hw.check.verdict import describe_level, drift_line
from hw.check.verify import LEVELS, mismatch_table
from onebit.atomic import save_figure_atomic, write_text_atomic


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def layer_table(result: BuildResult) -> list[dict[str, Any]]:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    report_dir = result.out_dir / "report"
    cycles = _read_json(report_dir / "estimate_layer_cycles.json")
    resources = _read_json(report_dir / "estimate_layer_resources.json")
    model = ModelWrapper(str(result.final_model))
    rows = []
    for node in model.graph.node:
        inst = getCustomOp(node)

        def attr(name: str):
            try:
                return inst.get_nodeattr(name)
            except Exception:
                return None

        res = resources.get(node.name, {})
        rows.append({"layer": node.name, "op_type": node.op_type, "PE": attr("PE"), "SIMD": attr("SIMD"),
                     "cycles": int(cycles.get(node.name, 0)), "LUT": float(res.get("LUT", 0)),
                     "BRAM_18K": float(res.get("BRAM_18K", 0)), "DSP": float(res.get("DSP", 0))})
    # FINN's estimate gives its DMAs and width converters 0 cycles; the board's AXI port bounds the rate
    from hw.finn.autofold.streams import with_stream_rows

    return with_stream_rows(model, result.board.axi_port_bits, result.board.fpga_part, rows)


def write_report(result: BuildResult, meta: dict[str, Any], collapse_report: dict[str, Any],
                 verification: dict[str, Any], seconds: float, marker: bool = True,
                 compare_unpipelined: bool = False) -> dict[str, Any]:
    """report.md (+ resources.png) now; report.json too unless `marker` is False (then the caller writes it
    last with `write_report_json`, after the deployment package). compare_unpipelined: --compare-unpipelined."""
    board = result.board
    rows = layer_table(result)
    totals = {key: sum(r[key] for r in rows) for key in ("LUT", "BRAM_18K", "DSP")}
    bottleneck = max(rows, key=lambda r: r["cycles"]) if rows else None
    network = _read_json(result.out_dir / "report" / "estimate_network_performance.json")
    max_cycles = bottleneck["cycles"] if bottleneck else 0
    fps = board.clock_mhz * 1e6 / max_cycles if max_cycles else None
    # One latency figure everywhere (autofold_report.md too): FINN's critical path plus the DMAs' cycles.
    dma_cycles = sum(r["cycles"] for r in rows if str(r["op_type"]).startswith("IODMA"))
    latency_cycles = (network["critical_path_cycles"] + dma_cycles if "critical_path_cycles" in network
                      else sum(r["cycles"] for r in rows))
    budget = board.budget()
    report = {
        "format": "onebit-build-report", "version": 1,
        "checkpoint": {"arch": meta.get("arch"), "estimator": meta.get("estimator"),
                       "dataset": meta.get("dataset"), "metrics": {k: v for k, v in (meta.get("metrics") or {}).items()
                                                                   if k != "history"}},
        "board": board.to_dict(),
        "folding": {"mode": result.folding.mode, "description": result.folding.describe(),
                    "file": str(result.out_dir / "folding.json")},
        # what the hardware computes: the collapsed model (an imported model's own QONNX reference)
        "accuracy": verification["levels"][verification.get("compared_against", "pytorch_collapsed")].get("accuracy"),
        "verification": {k: v for k, v in verification.items() if k != "collapse_check"},
        "collapse": collapse_report,
        "layers": rows,
        "bottleneck": {"layer": bottleneck["layer"], "cycles": max_cycles} if bottleneck else None,
        "estimate": {"fps": fps, "latency_us": latency_cycles / board.clock_mhz if latency_cycles else None,
                     "latency_cycles": latency_cycles, "clock_mhz": board.clock_mhz,
                     "finn_network_estimate": network},
        "resources": {"total": totals, "budget": {"LUT": budget["LUT"], "BRAM_18K": budget["BRAM_18K"], "DSP": budget["DSP"]},
                      "fraction": {k: totals[k] / budget[k] if budget[k] else None for k in totals},
                      "note": "FINN estimates of the dataflow layers and the width converters FINN inserts; "
                              "FIFOs, the DMAs' logic and the shell are not included"},
        "io_bound": _io_bound(rows, board),
        "accelerator_io": {
            "input": ({"datatype": "UINT8", "pixels": "raw 0..255", "layout": _input_layout(result)}
                      if not isinstance(result.extras.get("input_packing"), dict) else
                      {"datatype": "BINARY", "pixels": "thresholded and bit-packed on the host",
                       "layout": _input_layout(result)}),
            "output": {"stream": "popcount p of the score layer, one per class (0 <= p <= n)",
                       "to_scores": "z = 2*p - n", "n": result.score_affine.get("n"),
                       "datatype": _output_datatype(result)},
        },
        "artifacts": {"build_dir": str(result.out_dir), "qonnx": str(result.out_dir / "model_qonnx.onnx"),
                      "final_model": str(result.final_model), "step_models": str(result.out_dir / "finn"),
                      "generated_hw": str(result.out_dir / "hw"), "finn_reports": str(result.out_dir / "report"),
                      "validation": str(result.out_dir / "validation"), "skipped": str(result.out_dir / "skipped.txt"),
                      **{k: v for k, v in result.extras.items()}},
        "steps": {"run": result.steps_run, "seconds": result.step_seconds},
        "skipped_steps": result.skipped,
        "seconds": round(seconds, 1),
    }
    packing = result.extras.get("input_packing")
    if isinstance(packing, dict):
        io_spec = _read_json(result.out_dir / "driver" / "io.json").get("input", {})
        report["input_packing"] = input_packing_section(packing, fps, board, io_spec.get("shape_folded") or [1, packing["bits"]])
    report["resources_synth"] = resources_synth(result, compare_unpipelined)
    png = _resources_png(result.out_dir / "resources.png", rows, board.name)
    if png:
        report["artifacts"]["resources_png"] = str(png)
    write_text_atomic(result.out_dir / "report.md", render_markdown(report))
    if marker:
        write_report_json(result.out_dir, report)
    return report


def input_packing_section(packing: dict[str, Any], fps: float | None, board, folded_shape) -> dict[str, Any]:
    """Bit-packed input: the accelerator's bound next to the host's threshold-and-pack rate, measured here."""
    from hw.driver.input_packing import measure_packing_rate

    host = measure_packing_rate(packing, tuple(folded_shape))
    bytes_per_image = int(packing["bits"]) // 8
    return {"packing": "host", "thresholds": packing["thresholds"], "pixels": int(packing["pixels"]),
            "bits_per_image": int(packing["bits"]), "bytes_per_image": bytes_per_image,
            "padding_bytes": bytes_per_image - -(-int(packing["pixels"]) // 8),
            "accelerator_fps": fps, "host_images_per_s": host["images_per_s"], "host_measure": host["how"],
            "limits_unpacked_images": "host" if fps and host["images_per_s"] < fps else "accelerator",
            "note": (f"images that arrive as uint8 pixels are thresholded and packed by the host (numpy) before the "
                     f"DMA; the rate above is the build machine's, a {board.name}'s ARM cores are slower; buffers "
                     "packed once (Accelerator.execute_packed) run at the accelerator's rate")}


def _input_layout(result: BuildResult) -> str:
    """From the accelerator's own input (a flat vector for MLPs, NHWC for CNNs), so imported models say it too."""
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(result.final_model))
    return "NHWC" if len(model.get_tensor_shape(model.graph.input[0].name)) == 4 else "NCHW flatten (host reshape)"


def write_report_json(out_dir: Path, report: dict[str, Any]) -> Path:
    """report.json, atomically: the marker of a finished build, so the pipeline writes it last."""
    return write_text_atomic(Path(out_dir) / "report.json", json.dumps(report, indent=2, default=str))


def _io_bound(rows: list[dict[str, Any]], board) -> dict[str, Any] | None:
    """The DMAs' cycles per image at the board's AXI port width: the rate no folding can beat."""
    dma = [r for r in rows if r["op_type"].startswith("IODMA")]
    if not dma:
        return None
    slowest = max(dma, key=lambda r: r["cycles"])
    return {"port_bits": board.axi_port_bits, "cycles": slowest["cycles"], "dma": slowest["layer"],
            "fps": board.clock_mhz * 1e6 / slowest["cycles"] if slowest["cycles"] else None}


def resources_synth(result: BuildResult, compare_unpipelined: bool = False) -> dict[str, Any]:
    """yosys synth_xilinx counts per node and for the whole design (hw/rtl/synth_report.py), `--mvau rtl` only;
    with each onebit MVAU also synthesized unpipelined where compare_unpipelined (--compare-unpipelined)."""
    if result.extras.get("mvau") != "rtl":
        return {"executed": False, "reason": "FINN HLS nodes have no RTL without Vitis HLS; build with --mvau rtl"}
    import shutil

    if shutil.which("yosys") is None:
        return {"executed": False, "reason": "yosys not found (apt-get install yosys; tools/setup_env.sh installs it)"}
    from qonnx.core.modelwrapper import ModelWrapper

    import logging

    from hw.rtl.synth_report import fmax_warnings, synth_resources

    synth = {"executed": True, **synth_resources(ModelWrapper(str(result.final_model)), result.board.fpga_part,
                                                 unpipelined=compare_unpipelined)}
    # every --mvau rtl build (auto-fold's included) says which node's estimated Fmax misses the board clock
    synth["fmax_warnings"] = fmax_warnings(synth, result.board.clock_mhz)
    for line in synth["fmax_warnings"]:
        logging.getLogger("onebit").warning("timing estimate: %s", line)
    return synth


def _output_datatype(result: BuildResult) -> str | None:
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(result.final_model))
    return str(model.get_tensor_datatype(model.graph.output[0].name).name)


def skipped_steps_markdown(skipped: list[dict[str, str]]) -> list[str]:
    """Each missing tool once, with the steps that need it (not the same sentence for every step)."""
    if not skipped:
        return ["- none"]
    steps_of: dict[str, list[str]] = {}
    for step in skipped:
        for missing in _top_level_items(str(step["missing"])):
            steps_of.setdefault(missing, []).append(step["step"])
    return [f"- missing {missing}: {', '.join(steps)}" for missing, steps in steps_of.items()]


def _top_level_items(text: str) -> list[str]:
    """'A (x; y); B (z)' -> ['A (x; y)', 'B (z)']: split at '; ' outside parentheses."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and text.startswith("; ", i):
            items.append(text[start:i])
            start = i + 2
    return [item for item in (*items, text[start:]) if item]


def _relative(value: Any, build_dir: str) -> Any:
    """A path inside the build folder as a relative one (a build folder is what a user carries around)."""
    if not isinstance(value, str) or not value.startswith("/"):
        return value
    try:
        return str(Path(value).relative_to(build_dir)) or "."
    except ValueError:
        return value


def layer_table_text(rows: list[dict[str, Any]]) -> str:
    # Name columns as wide as their longest entry (FINN's op names run to StreamingDataWidthConverter).
    layer_w = max([len("layer"), *(len(str(r["layer"])) for r in rows)])
    op_w = max([len("op"), *(len(str(r["op_type"])) for r in rows)])
    header = f"{'layer':<{layer_w}} {'op':<{op_w}} {'PE':>4} {'SIMD':>5} {'cycles':>8} {'LUT':>8} {'BRAM18':>7}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['layer']:<{layer_w}} {r['op_type']:<{op_w}} {str(r['PE'] or '-'):>4} "
                     f"{str(r['SIMD'] or '-'):>5} {r['cycles']:>8} {r['LUT']:>8.0f} {r['BRAM_18K']:>7.0f}")
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    est, res, ver = report["estimate"], report["resources"], report["verification"]
    lines = [f"# onebit build: {report['checkpoint']['arch']['name']} for {report['board']['name']}", ""]
    acc = report["accuracy"]
    lines.append(f"Test accuracy (integer scores, {ver['samples']} {ver['dataset']} test images): "
                 f"{acc:.2%}" if acc is not None else "Test accuracy: n/a")
    against = ("the collapsed integer model" if ver.get("compared_against", "pytorch_collapsed") == "pytorch_collapsed"
               else f"{ver['compared_against']}: the imported QONNX model on the declared float input")
    lines += ["", f"## Verification (integers compared on every sample, against {against})", ""]
    lines += mismatch_table(ver["levels"])
    lines += ["", f"First divergent level: {ver['first_divergent_level'] or 'none'}"
              + (f"; failed levels: {', '.join(ver['failed_levels'])}" if ver.get("failed_levels") else "")
              + (f"; skipped (a tool absent): {', '.join(ver['skipped_levels'])}" if ver.get("skipped_levels") else "")
              + ". Outcomes and what each level executes: docs/verification.md in the onebit repository.", ""]
    drift = ver.get("collapse_drift") or {}
    if drift.get("integer_mismatches"):
        lines += [f"Collapse drift (pytorch_trained row; does not fail the build): {drift['integer_mismatches']} "
                  f"images, first {drift['images'][:10]}: {drift['explanation']}.", ""]
    lines += ["## Per-layer estimates (FINN)", "", "```", layer_table_text(report["layers"]), "```", ""]
    if report["bottleneck"]:
        lines.append(f"Bottleneck: {report['bottleneck']['layer']} ({report['bottleneck']['cycles']} cycles). "
                     f"Estimated {est['fps']:,.0f} FPS, latency {est['latency_us']:.1f} us at {est['clock_mhz']:.0f} MHz.")
    if report.get("io_bound"):
        io = report["io_bound"]
        lines.append(f"I/O bound: {io['dma']} {io['cycles']} cycles per image through the {io['port_bits']}-bit "
                     f"AXI port ({io['fps']:,.0f} FPS); no folding is faster.")
    t, b = res["total"], res["budget"]
    lines += ["", f"Resources: LUT {t['LUT']:,.0f} / {b['LUT']:,} ({res['fraction']['LUT']:.1%}), "
                  f"BRAM_18K {t['BRAM_18K']:,.0f} / {b['BRAM_18K']:,} ({res['fraction']['BRAM_18K']:.1%}), "
                  f"DSP {t['DSP']:,.0f} / {b['DSP']:,}. {res['note']}.", ""]
    warning = over_budget_warning(report)
    if warning:
        lines += [f"**{warning}**", ""]
    synth = report.get("resources_synth") or {}
    if synth.get("executed"):
        from hw.rtl.synth_report import markdown_rows

        lines += markdown_rows(synth, report["layers"], est["clock_mhz"]) + [""]
        lines += [f"**WARNING (timing estimate): {w}**" for w in synth.get("fmax_warnings", [])] + [""]
    elif synth:
        lines += [f"Resources by yosys: not run ({synth['reason']}).", ""]
    packing = report.get("input_packing")
    if packing:
        fps_text = f"{packing['accelerator_fps']:,.0f}" if packing["accelerator_fps"] else "?"
        lines += ["## Bit-packed input", "",
                  f"The host thresholds every pixel (bit = pixel >= {packing['thresholds']} per channel) and packs 8 to a "
                  f"byte: the DMA carries {packing['bytes_per_image']} B per image ({packing['pixels']} pixel bits + "
                  f"{packing['padding_bytes']} B of zero padding to whole AXI port words).", "",
                  f"- accelerator bound with packed input: {fps_text} images/s (estimate)",
                  f"- host threshold + pack: {packing['host_images_per_s']:,.0f} images/s on the build machine "
                  f"({packing['host_measure']})",
                  f"- images arriving unpacked (uint8) are limited by the **{packing['limits_unpacked_images']}**; "
                  f"{packing['note']}.", ""]
    io = report["accelerator_io"]
    lines += ["## Accelerator I/O", "", f"- input: {io['input']['datatype']} {io['input']['pixels']}, {io['input']['layout']}",
              f"- output: {io['output']['stream']}, in {io['output']['datatype']} words on the stream; class scores "
              f"{io['output']['to_scores']}, n = {io['output']['n']}", ""]
    imported = (report.get("collapse") or {}).get("import")
    if imported:  # a QONNX model from elsewhere (export/qonnx_import.py)
        tail, spec = ver.get("score_tail") or imported["score_tail"], imported["input"]
        lines += ["## Imported model", "", f"- model: {imported['model']}",
                  f"- input: pixel p (UINT8 on the accelerator) -> {spec['scale_text']} * p {spec['offset']:+g} "
                  f"(declared by {spec['source']}), merged in front of the graph and absorbed by streamlining",
                  f"- input quantizer check: {(imported.get('input_quantizer') or {}).get('verdict', 'no input quantizer')}",
                  f"- score tail removed from the hardware: {', '.join(tail['nodes']) or 'none'}; "
                  f"integer form on the accelerator z = 2p - n; float form {tail.get('float_form_from_z', tail['form'])} "
                  f"(positive scalar scale: same argmax)", ""]
    lines += ["## Skipped FINN steps", ""] + skipped_steps_markdown(report["skipped_steps"])
    lines += ["", "## Artifacts (paths relative to the build folder)", ""]
    lines += [f"- {k}: {_relative(v, report['artifacts']['build_dir'])}" for k, v in report["artifacts"].items()
              if k != "build_dir"]
    return "\n".join(lines) + "\n"


def over_budget_warning(report: dict[str, Any]) -> str | None:
    """A one-line warning when FINN's estimates exceed the board (a folding that cannot be placed), else None."""
    fraction = report["resources"]["fraction"]
    over = [f"{kind} {value:.0%}" for kind, value in fraction.items() if value is not None and value > 1.0]
    if not over:
        return None
    return (f"WARNING: this folding does not fit {report['board']['name']} ({', '.join(over)} of the board); "
            "rebuild with --auto-fold (best FPS within the budget) or a lower --target-fps")


def print_summary(report: dict[str, Any]) -> None:
    """The console summary of a build; every line also goes to the build log (onebit/log.py)."""
    from onebit.log import say

    est, res, ver = report["estimate"], report["resources"], report["verification"]
    say(layer_table_text(report["layers"]))
    if est["fps"]:
        say(f"\nbottleneck {report['bottleneck']['layer']}: {report['bottleneck']['cycles']} cycles -> "
            f"estimated {est['fps']:,.0f} FPS, latency {est['latency_us']:.1f} us at {est['clock_mhz']:.0f} MHz "
            f"on {report['board']['name']}")
    t, b = res["total"], res["budget"]
    say(f"resources: LUT {t['LUT']:,.0f}/{b['LUT']:,}  BRAM_18K {t['BRAM_18K']:,.0f}/{b['BRAM_18K']:,}  "
        f"DSP {t['DSP']:,.0f}/{b['DSP']:,}")
    warning = over_budget_warning(report)
    if warning:
        say(warning)
    acc = report["accuracy"]
    say(f"accuracy {acc:.2%} on {ver['samples']} {ver['dataset']} test images" if acc is not None else "")
    for level, e in ver["levels"].items():  # in the order they ran
        say(f"  {level:<18} {describe_level(e)}")
    if drift_line(ver.get("collapse_drift") or {}):
        say(f"  {drift_line(ver['collapse_drift'])}")
    failed = [lv for lv in ver.get("failed_levels") or [] if lv != ver["first_divergent_level"]]
    say(f"first divergent level: {ver['first_divergent_level'] or 'none'}"
        + (f" (also failed: {', '.join(failed)})" if failed else "") + "; "
        f"{len(report['skipped_steps'])} FINN steps skipped (see skipped.txt)")
    say(f"build folder: {report['artifacts']['build_dir']} (report.md, report.json)")


def _resources_png(path: Path, rows: list[dict[str, Any]], board: str) -> Path | None:
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["layer"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 0.5 * len(rows) + 2), sharey=True)
    for ax, key in zip(axes, ("cycles", "LUT", "BRAM_18K")):
        ax.barh(names, [r[key] for r in rows], color="tab:blue")
        ax.set_title(key)
        ax.invert_yaxis() if ax is axes[0] else None
    fig.suptitle(f"FINN estimates per layer ({board})")
    fig.tight_layout()
    return save_figure_atomic(fig, path, dpi=100)
