"""`--mvau rtl` end to end on a tiny TFC: FINN's flow with onebit's RTL nodes, the whole accelerator in
Verilator against the bit-exact accelerator model, and the ways the level must fail (a corrupted weight
init file names the node; a consumer that stops is a deadlock error, not a hang).

One FINN build (about a minute, the suite's small `--mvau rtl` folding, tests/conftest.py: it needs width converters)
and one Verilator build of the stitched design (about half a minute, cached); the tiny TFC checkpoint is the shared
tfc_build fixture's.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator not installed (tools/setup_env.sh)")]

SAMPLES = 24


@pytest.fixture(scope="module")
def tfc_rtl_build(tfc_build, tfc_rtl_folding, tmp_path_factory) -> Path:
    import quant_models.compat  # noqa: F401
    from export.collapse import collapse
    from export.qonnx import export_qonnx
    from hw.boards import get_board
    from hw.finn.build import build_accelerator
    from hw.finn.folding import folding_from_file
    from hw.pipeline import finish_build_folder
    from quant_models.checkpoint import load_checkpoint

    out = tmp_path_factory.mktemp("tfc_rtl") / "build"
    out.mkdir()
    shutil.copy2(tfc_build / "model.pt", out / "model.pt")
    trained, meta = load_checkpoint(out / "model.pt")
    plain, _ = collapse(trained, meta)
    qonnx_path = export_qonnx(plain, meta, out / "model_qonnx.onnx")
    result = build_accelerator(qonnx_path, out, get_board("Pynq-Z1"), folding_from_file(tfc_rtl_folding),
                               progress=False, mvau="rtl")
    finish_build_folder(result)
    return out


def _images(build: Path, n: int = SAMPLES) -> np.ndarray:
    from hw.check.verify import load_test_set
    from quant_models.checkpoint import load_checkpoint

    _, meta = load_checkpoint(build / "model.pt")
    return load_test_set(meta, n)[0]


def test_rtl_build_keeps_folding_and_runs_finns_later_steps(tfc_rtl_build, tfc_rtl_folding):
    from finn.util.fpgadataflow import is_rtl_node
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    model = ModelWrapper(str(tfc_rtl_build / "finn" / "step_hw_codegen.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops and set(ops) == {"OnebitMVAU_rtl"}, ops
    assert all(is_rtl_node(n) for n in model.graph.node)  # what FINN's PrepareIP / CreateStitchedIP select
    for node in model.graph.node:
        inst = getCustomOp(node)
        # FINN's code generation (step_hw_codegen) called generate_hdl: every listed file exists
        assert all(Path(f).is_file() for f in inst.get_rtl_file_list(abspath=True)), node.name
        assert inst.get_nodeattr("ip_path")
    # FINN's estimate reports name the nodes of the final graph (report.md joins them by name)
    cycles = json.loads((tfc_rtl_build / "report" / "estimate_layer_cycles.json").read_text())
    assert set(cycles) == {n.name for n in model.graph.node}
    # the folding chosen before the replacement is kept: PE / SIMD of every layer in order
    folding = json.loads(tfc_rtl_folding.read_text())
    assert [(getCustomOp(n).get_nodeattr("PE"), getCustomOp(n).get_nodeattr("SIMD")) for n in model.graph.node] \
        == [(folding[name]["PE"], folding[name]["SIMD"]) for name in sorted(folding)]


def test_rtl_accelerator_matches_and_meets_the_estimate(tfc_rtl_build):
    from hw.check.accel_model import AcceleratorModel
    from hw.check.rtl_accelerator import mismatch_message, run_rtl_accelerator
    from hw.driver.accelerator import Accelerator

    images = _images(tfc_rtl_build)
    result = run_rtl_accelerator(tfc_rtl_build, images)
    assert result["mismatching"] == [], mismatch_message(result)
    assert len(result["width_converters"]) == 3
    model = Accelerator(tfc_rtl_build / "driver" / "io.json", backend="model",
                        model=AcceleratorModel.from_build(tfc_rtl_build))
    np.testing.assert_array_equal(result["scores"], model.predict(images).scores)  # z = 2p - n, like every level
    # steady state at FINN's estimated bottleneck (one fold step per cycle, FIFOs hold an MVAU input vector)
    assert abs(result["cycles_per_image"] / result["estimated_bottleneck_cycles"] - 1) < 0.05, result
    assert result["first_image_latency"] > result["estimated_bottleneck_cycles"]


def test_corrupted_weight_file_is_a_mismatch_naming_the_node(tfc_rtl_build, tmp_path):
    from hw.check.rtl_accelerator import mismatch_message, run_rtl_accelerator

    images = _images(tfc_rtl_build)
    intact = run_rtl_accelerator(tfc_rtl_build, images, init_dir=tmp_path)   # writes the generated files there
    assert intact["mismatching"] == []
    weights = sorted(tmp_path.glob("*_1_weights.dat"))
    assert weights, sorted(p.name for p in tmp_path.iterdir())
    lines = weights[0].read_text().splitlines()
    for i in range(0, len(lines), 2):  # flip weight 0 of every other fold of the second layer
        lines[i] = format(int(lines[i], 16) ^ 1, f"0{len(lines[i])}x")
    weights[0].write_text("\n".join(lines) + "\n")
    broken = run_rtl_accelerator(tfc_rtl_build, images, init_dir=tmp_path)
    assert broken["mismatching"], "a corrupted weight file must change the outputs"
    node = weights[0].name.removesuffix("_weights.dat")
    message = mismatch_message(broken)
    assert node in message and "weights.dat differs" in message, message
    assert [r["node"] for r in broken["nodes"] if r["status"] != "ok"] == [node]


def test_stopped_consumer_is_a_deadlock_error_not_a_hang(tfc_rtl_build):
    from hw.check.rtl_accelerator import run_rtl_accelerator
    from hw.rtl import StreamDeadlock

    images = _images(tfc_rtl_build, 6)
    # an output DMA that takes 2 images' scores and then stops: FIFOs fill, the chain stops, the input stalls
    with pytest.raises(StreamDeadlock, match=r"rtl_accelerator: deadlock in onebit_accel: no stream transfer for "
                                             r"3000 cycles .* check FIFO depths"):
        run_rtl_accelerator(tfc_rtl_build, images, sink_capacity=2, idle_limit=3000)
    with pytest.raises(StreamDeadlock, match="passed the cycle limit of 5000 cycles"):
        run_rtl_accelerator(tfc_rtl_build, images, max_cycles=5000)


def test_hls_build_is_refused_with_the_reason(tfc_build):
    from qonnx.core.modelwrapper import ModelWrapper

    from hw.rtl.stitch import plan_accelerator
    from onebit.errors import OnebitError

    with pytest.raises(OnebitError, match=r"MVAU_hls_0 \(MVAU_hls\) and \d+ more are FINN HLS nodes.*--mvau rtl"):
        plan_accelerator(ModelWrapper(str(tfc_build / "finn" / "step_hw_codegen.onnx")))


def test_level_interface_on_rtl_and_hls_builds(tfc_build, tfc_rtl_build):
    """rtl_accelerator as a hardware level (hw/check/levels.py): class scores on an rtl build, which verify
    compares with the trained model like every level; on an hls build it is not executed, with the reason."""
    levels = pytest.importorskip("hw.check.levels", reason="hw/check/levels.py (issue 10) not merged yet")
    from hw.check.rtl_accelerator import LEVEL

    assert "rtl_accelerator" in levels.LEVEL_MODULES and levels.get_level("rtl_accelerator") is LEVEL
    images = _images(tfc_rtl_build, 8)

    def context(build):
        return levels.LevelContext(build_dir=build, final_model=build / "finn" / "step_hw_codegen.onnx",
                                   hw_layers_model=build / "finn" / "step_create_dataflow_partition.onnx",
                                   images=images)

    entry = levels.run_level("rtl_accelerator", context(tfc_rtl_build))
    assert entry["executed"] and entry["integer_mismatches"] == 0 and entry["scores"].shape == (8, 10), entry
    hls = levels.run_level("rtl_accelerator", context(tfc_build))
    assert not hls["executed"] and "--mvau rtl" in hls["reason"], hls


@pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys not installed (tools/setup_env.sh installs it as root)")
def test_every_onebit_node_is_pipelined_for_the_board_clock(tfc_rtl_build):
    """The build's synthesis clock (Pynq-Z1: 10 ns) reaches every OnebitMVAU_rtl (clk_ns) and decides its
    pipelining; each node's estimated Fmax (hw/rtl/timing.py) is at least 1.25x the board clock."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from hw.boards import get_board
    from hw.rtl.registry import ensure_onebit_ops
    from hw.rtl.synth_report import fmax_warnings, synth_resources

    board = get_board("Pynq-Z1")
    model = ModelWrapper(str(tfc_rtl_build / "finn" / "step_hw_codegen.onnx"))
    ensure_onebit_ops(model)
    mvaus = [n for n in model.graph.node if n.op_type == "OnebitMVAU_rtl"]
    assert len(mvaus) == 4 and all(getCustomOp(n).get_nodeattr("clk_ns") == board.clock_ns for n in mvaus)
    synth = synth_resources(model, board.fpga_part, whole=False, unpipelined=False)
    for node in mvaus:
        timing = synth["nodes"][node.name]["timing"]
        assert "error" not in timing, timing
        assert timing["fmax_mhz"] >= 1.25 * board.clock_mhz, (node.name, timing)
    assert fmax_warnings(synth, board.clock_mhz) == []

