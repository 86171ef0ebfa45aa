"""FIFO depths of a `--mvau rtl` build: the depths onebit sizes by simulation (hw/rtl/fifo_sizing.py, the
whole accelerator in Verilator) become the depths FINN stitches.

`step_onebit_fifo_depths` (after step_hw_codegen) sizes the FIFOs of the code-generated graph and writes them
where FINN's own flow takes FIFO depths from:
  * the nodes' `inFIFODepths` / `outFIFODepths` attributes, which FINN's InsertFIFO turns into StreamingFIFO
    nodes (depth = max(producer's out, consumer's in); with create_shallow_fifos, as step_set_fifo_depths
    calls it, one FIFO on every edge, the graph input and output);
  * a FIFO configuration file in FINN's format (`fifo_depths` / `impl_style` / `ram_style` per
    StreamingFIFO_rtl node, what step_set_fifo_depths writes to report/fifo_sizing.json), named by the
    build configuration's `fifo_config_file` with `auto_fifo_depths = False`: step_set_fifo_depths then
    inserts the FIFOs (InsertDWC, InsertFIFO(create_shallow_fifos=True), SpecializeLayers, names) and
    applies that file (ApplyFIFODepthsFromFile), instead of sizing them by XSI simulation;
  * the model's metadata (`onebit_fifo_depths`), so that the rtl_accelerator level simulates exactly these
    depths (hw/rtl/stitch.py stitched_depths; after step_set_fifo_depths it reads FINN's StreamingFIFO
    nodes themselves).
The file is made by running FINN's own insertion transforms on a copy of the graph, so its FIFO names and
its order are FINN's; the step checks that FINN's FIFOs come out at exactly the sized depths.

`--fifo-sizing finn` leaves the depths to FINN (XSI simulation on a Vivado host, force_minimal_fifos with
ONEBIT_SKIP_RTLSIM=1). The default, `auto`, sizes here wherever it can (a `--mvau rtl` graph without FINN
HLS nodes, Verilator installed) and says in the log and in the metadata why not otherwise.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

from onebit.atomic import write_text_atomic
from onebit.errors import OnebitError

FIFO_SIZING_CHOICES = ("auto", "onebit", "finn")
STEP_NAME = "step_onebit_fifo_depths"
FIFO_CONFIG = "onebit_fifo_config.json"   # in the build folder's finn/


def check_fifo_sizing(value: str) -> str:
    if value not in FIFO_SIZING_CHOICES:
        raise OnebitError(f"--fifo-sizing must be one of {', '.join(FIFO_SIZING_CHOICES)}, got '{value}'")
    return value


def write_node_depths(model, design) -> None:
    """Put an AcceleratorDesign's FIFO depths (hw/rtl/stitch.py plan_accelerator: fifo_in, fifo_<i> and, around
    a width converter, fifo_<i> / fifo_<i>b, fifo_out) into the nodes' inFIFODepths/outFIFODepths, so that
    FINN's InsertDWC + InsertFIFO create the same FIFOs at the same depths."""
    from qonnx.custom_op.registry import getCustomOp

    nodes = {stage.name: i for i, stage in enumerate(design.stages) if stage.kind in ("onebit", "finn")}
    by_name = {node.name: node for node in model.graph.node}

    def set_first(node_name: str, attr: str, depth: int) -> None:
        inst = getCustomOp(by_name[node_name])
        values = list(inst.get_nodeattr(attr)) or [2]
        values[0] = int(depth)
        inst.set_nodeattr(attr, values)

    stages = design.stages
    for i, stage in enumerate(stages):
        if stage.kind != "fifo":
            continue
        before = next((stages[j] for j in range(i - 1, -1, -1) if stages[j].kind != "fifo"), None)
        after = next((stages[j] for j in range(i + 1, len(stages)) if stages[j].kind != "fifo"), None)
        depth = stage.parameters["DEPTH"]
        if before is not None and before.name in nodes:   # the producer's side (no converter in between)
            set_first(before.name, "outFIFODepths", depth)
        if after is not None and after.name in nodes:     # the consumer's side
            set_first(after.name, "inFIFODepths", depth)


def finn_fifo_config(model, fpga_part: str) -> dict[str, Any]:
    """What FINN's step_set_fifo_depths (auto_fifo_depths=False) makes of the graph's FIFO attributes, run on
    a copy with FINN's own transforms in its order: its FIFO configuration file (fifo_depths, impl_style,
    ram_style per StreamingFIFO_rtl node, in stream order)."""
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.general import GiveReadableTensorNames

    from finn.builder.build_dataflow_steps import GiveUniqueNodeNamesRecursive

    copy = ModelWrapper(model.model.SerializeToString())
    for transform in (InsertDWC(), InsertFIFO(create_shallow_fifos=True), SpecializeLayers(fpga_part),
                      GiveUniqueNodeNamesRecursive(), GiveReadableTensorNames()):
        copy = copy.transform(transform)
    config: dict[str, Any] = {"fifo_depths": {}, "impl_style": {}, "ram_style": {}}
    for node in copy.graph.node:
        if node.op_type.startswith("StreamingFIFO"):
            inst = getCustomOp(node)
            config["fifo_depths"][node.name] = int(inst.get_nodeattr("depth"))
            config["impl_style"][node.name] = inst.get_nodeattr("impl_style")
            config["ram_style"][node.name] = inst.get_nodeattr("ram_style")
    return config


def _why_not_onebit(model, mvau: str) -> str | None:
    from finn.util.fpgadataflow import is_hls_node

    if mvau != "rtl":
        return "--mvau hls: the partition holds FINN HLS nodes, which only Vitis HLS turns into RTL"
    hls = [n.name for n in model.graph.node if is_hls_node(n)]
    if hls:
        return f"{hls[0]} and {len(hls) - 1} more nodes stay on FINN's HLS (see onebit_rtl_nodes)"
    if shutil.which("verilator") is None:
        return "verilator not found (apt-get install verilator; tools/setup_env.sh installs it)"
    return None


def make_fifo_step(out_dir: Path, fpga_part: str, mvau: str, choice: str = "auto") -> Callable:
    """The builder step (hw/finn/build.py puts it after step_hw_codegen)."""
    check_fifo_sizing(choice)

    def step(model, cfg):
        from hw.rtl.stitch import FIFO_DEPTHS_KEY, RTLAccelerator

        log = logging.getLogger("onebit")
        why = "--fifo-sizing finn" if choice == "finn" else _why_not_onebit(model, mvau)
        if why is not None:
            if choice == "onebit":
                raise OnebitError(f"--fifo-sizing onebit cannot size this build's FIFOs: {why}; use --fifo-sizing "
                                  "finn or auto")
            log.info("FIFO depths left to FINN's step_set_fifo_depths: %s", why)
            model.set_metadata_prop(FIFO_DEPTHS_KEY, json.dumps({"source": "finn", "why": why}))
            return model
        # the same artifacts folder as the rtl_accelerator level: its Verilator build is reused there
        try:
            sim = RTLAccelerator(model, artifacts=out_dir / "hw" / "rtl_accelerator", fifo_sizing="simulated")
            sim.sizing  # noqa: B018 - sizes now (one simulation), so a design that cannot run fails here
        except (OnebitError, RuntimeError) as error:
            if choice == "onebit":
                raise
            # auto: the design does not build or run in Verilator. The build goes on with FINN's sizing so that
            # the verification levels report the error as their failure (rtl_nodes, rtl_accelerator name the
            # node), instead of a bare stop here.
            why = f"onebit's simulation could not size them: {(str(error).splitlines() or [type(error).__name__])[0][:300]}"
            log.warning("FIFO depths left to FINN's step_set_fifo_depths: %s", why)
            model.set_metadata_prop(FIFO_DEPTHS_KEY, json.dumps({"source": "finn", "why": why}))
            return model
        if sim.sizing is None:
            raise OnebitError(f"FIFO sizing: the graph already carries FIFO depths ({sim.fifo_source}); "
                              "step_onebit_fifo_depths runs on the code-generated graph before FINN's FIFOs")
        write_node_depths(model, sim.design)
        config = finn_fifo_config(model, fpga_part)
        ours = [s.parameters["DEPTH"] for s in sim.design.stages if s.kind == "fifo"]
        if list(config["fifo_depths"].values()) != ours:
            raise OnebitError(f"FIFO sizing: FINN's InsertFIFO would stitch depths {list(config['fifo_depths'].values())}, "
                              f"not the sized {ours} (a width converter placed differently from onebit's stitching)")
        path = write_text_atomic(out_dir / "finn" / FIFO_CONFIG, json.dumps(config, indent=2))
        # FINN's own switch for FIFO depths given by the user: step_set_fifo_depths inserts the FIFOs and
        # applies this file instead of sizing them (set here because only this step knows it can size)
        cfg.auto_fifo_depths = False
        cfg.fifo_config_file = Path(path)
        sizing = sim.sizing
        model.set_metadata_prop(FIFO_DEPTHS_KEY, json.dumps({
            "source": "onebit", "depths": sim.depths, "finn_fifo_config": str(path),
            "pace_cycles_per_image": sizing["pace_cycles_per_image"], "capped": sizing["capped"],
            "rule_depths": sizing["rule_depths"]}))
        log.info("FIFO depths sized by simulation (%s): %s", sim.fifo_source,
                 ", ".join(f"{k}={v}" for k, v in sim.depths.items()))
        if sizing["capped"]:
            log.warning("FIFO sizing: %s filled up to the sizing depth (a node slower than FINN's estimate)",
                        ", ".join(sizing["capped"]))
        return model

    return step


def fifo_summary(model) -> dict[str, Any] | None:
    from hw.rtl.stitch import FIFO_DEPTHS_KEY

    text = model.get_metadata_prop(FIFO_DEPTHS_KEY)
    return json.loads(text) if text else None
