"""The levels that execute FINN's generated hardware: rtl_nodes (Verilog in Verilator), cppsim (HLS C++).

Each is shown to pass on a real build and to fail, naming the node, when the generated code is wrong.
Verilator builds go to a per-session cache, so every design is compiled once.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from hw.check import cppsim as cppsim_level
from hw.check.levels import LevelContext, capture_node_inputs, node_table, parse_levels, run_level
from hw.check.rtl_nodes import verilator_path

needs_verilator = pytest.mark.skipif(verilator_path() is None, reason="verilator not installed (tools/setup_env.sh)")


@pytest.fixture(scope="session")
def verilator_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("verilator-cache")


def _context(build: Path, final_model: Path | None = None, images: int = 3, random: int = 3, **options) -> LevelContext:
    from hw.finn.env import prepare_finn
    from quant_models.data import load_dataset

    prepare_finn(build / "hw")
    test = load_dataset("fashion-mnist", "test").head(images)
    return LevelContext(build_dir=build, final_model=final_model or build / "finn" / "step_hw_codegen.onnx",
                        hw_layers_model=build / "finn" / "step_create_dataflow_partition.onnx",
                        images=test.images, random_samples=random, options=options)


def _node(model_path: Path, op_type: str) -> str:
    from qonnx.core.modelwrapper import ModelWrapper

    return next(n.name for n in ModelWrapper(str(model_path)).graph.node if n.op_type == op_type)


def _padder_with_edited_verilog(build: Path, tmp_path: Path, edit) -> str:
    """The build's final graph saved as tmp_path/final.onnx with FMPadding_rtl's generated Verilog (a copy)
    passed through `edit`; returns the node's name."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    model = ModelWrapper(str(build / "finn" / "step_hw_codegen.onnx"))
    node = next(n for n in model.graph.node if n.op_type == "FMPadding_rtl")
    inst = getCustomOp(node)
    edited = tmp_path / "code_gen"
    shutil.copytree(inst.get_nodeattr("code_gen_dir_ipgen"), edited)
    verilog = edited / f"{node.name}.v"
    verilog.write_text(edit(verilog.read_text()))
    inst.set_nodeattr("code_gen_dir_ipgen", str(edited))
    model.save(str(tmp_path / "final.onnx"))
    return node.name


@pytest.mark.parametrize("dtype_name,per_beat,width", [("BIPOLAR", 5, 8), ("BINARY", 64, 64), ("UINT8", 9, 72),
                                                       ("INT4", 5, 24), ("INT3", 5, 16)])
def test_vectorized_stream_packing_equals_finns(dtype_name, per_beat, width):
    """rtl_nodes packs/unpacks beats itself (FINN's per-element hex strings took minutes on CNV frames): the
    bytes and values must be FINN's npy_to_rtlsim_input / rtlsim_output_to_npy ones for every datatype kind."""
    from finn.util.data_packing import npy_to_rtlsim_input, rtlsim_output_to_npy
    from qonnx.core.datatype import DataType

    from hw.check.rtl_nodes import _words_to_ints, pack_elements, unpack_elements

    dtype = DataType[dtype_name]
    bits = dtype.bitwidth()
    rng = np.random.default_rng(3)
    values = rng.integers(int(dtype.min()), int(dtype.max()) + 1, size=(17, per_beat)).astype(np.float32)
    if dtype_name == "BIPOLAR":
        values = np.where(values > 0, 1.0, -1.0).astype(np.float32)
    values[0] = dtype.max()
    values[1] = dtype.min()
    packed = pack_elements(values, bits, dtype, width)
    finn = [int(b) for b in npy_to_rtlsim_input(values, dtype, width)]
    assert [int.from_bytes(row.tobytes(), "little") for row in packed] == finn
    words = packed.view("<u4")
    ours = unpack_elements(words, per_beat, bits, dtype)
    theirs = rtlsim_output_to_npy(_words_to_ints(words), None, dtype, values.shape, width, bits)
    assert np.array_equal(ours, values) and np.array_equal(theirs, values)


@pytest.mark.slow
@needs_verilator
def test_rtl_nodes_match_finn_and_rebuild_nothing(cnv_build, verilator_cache):
    final = cnv_build / "finn" / "step_hw_codegen.onnx"
    nodes = [_node(final, "FMPadding_rtl"), _node(final, "ConvolutionInputGenerator_rtl")]
    context = _context(cnv_build, nodes=nodes, cache_dir=verilator_cache)
    entry = run_level("rtl_nodes", context)
    assert entry["executed"] and entry["integer_mismatches"] == 0, entry
    assert [r["node"] for r in entry["nodes"]] == nodes
    assert all(r["status"] == "ok" and r["cycles"] > 0 for r in entry["nodes"]), entry["nodes"]
    again = run_level("rtl_nodes", context)  # same content: nothing compiled
    assert [r["verilator_build"] for r in again["nodes"]] == ["cached", "cached"]
    assert again["integer_mismatches"] == 0
    assert any("FMPadding_rtl" in row for row in node_table({"rtl_nodes": again}))


@pytest.mark.slow
@needs_verilator
def test_rtl_nodes_reports_a_corrupted_generated_file_by_node(cnv_build, tmp_path, verilator_cache):
    """FMPadding_rtl's generated Verilog with one wrong parameter: mismatches, and the node named."""
    def pad_one_column_late(text: str) -> str:
        start = int(re.search(r"\.INIT_XON\((\d+)\)", text).group(1))
        return text.replace(f".INIT_XON({start})", f".INIT_XON({start + 1})")

    node = _padder_with_edited_verilog(cnv_build, tmp_path, pad_one_column_late)
    entry = run_level("rtl_nodes", _context(cnv_build, tmp_path / "final.onnx", nodes=[node],
                                            cache_dir=verilator_cache))
    row = entry["nodes"][0]
    assert entry["executed"] and entry["integer_mismatches"] > 0
    assert row["node"] == node and row["status"] == "MISMATCH"
    assert row["mismatching_images"] == 3 and row["first_mismatching_images"] == [0, 1, 2]
    assert row["verilator_build"].startswith("compiled")  # new content, new build


@pytest.mark.slow
@needs_verilator
def test_rtl_nodes_reports_a_stalled_node_as_deadlock(cnv_build, tmp_path, verilator_cache):
    """A padder whose output never becomes valid: the harness stops at its cycle limit and says so."""
    def never_valid(text: str) -> str:
        assert ".m_axis_tvalid(out0_V_TVALID)" in text
        text = text.replace(".m_axis_tvalid(out0_V_TVALID)", ".m_axis_tvalid()")
        return text.replace("endmodule", "assign out0_V_TVALID = 1'b0;\nendmodule")

    node = _padder_with_edited_verilog(cnv_build, tmp_path, never_valid)
    entry = run_level("rtl_nodes", _context(cnv_build, tmp_path / "final.onnx", images=1, random=0,
                                            nodes=[node], cache_dir=verilator_cache))
    row = entry["nodes"][0]
    assert entry["status"] == "failed" and entry["error"].startswith(f"node {node}: failed: deadlock") and row["node"] == node
    assert row["status"].startswith("failed: deadlock: no stream progress for") and "output beats produced" in row["status"]


def test_rtl_nodes_without_rtl_nodes_and_without_verilator(tfc_build, monkeypatch):
    """A default (HLS) TFC build has no *_rtl node: rtl_nodes says "nothing to simulate", never "passed ... 0
    nodes" and never "skipped" (no tool is missing), in its entry, the terminal line and report.md's table; and
    without Verilator it is skipped."""
    from hw.check.verdict import describe_level, judge
    from hw.check.verify import mismatch_table

    if verilator_path():
        entry = run_level("rtl_nodes", _context(tfc_build))
        assert entry["status"] == "nothing to simulate" and not entry["executed"] and entry["nodes"] == [], entry
        assert entry["reason"].startswith("nothing to simulate: no *_rtl node in the final HW graph (step_hw_codegen.onnx)")
        line = describe_level(entry)
        assert line.startswith("nothing to simulate: no *_rtl node") and "passed" not in line and "0 nodes" not in line
        (row,) = [r for r in mismatch_table({"rtl_nodes": entry}) if r.startswith("| rtl_nodes |")]
        assert row.startswith("| rtl_nodes | nothing to simulate: no *_rtl node") and "passed" not in row
        verdict = judge({"pytorch_collapsed": {"executed": True, "integer_mismatches": 0}, "rtl_nodes": entry})
        assert verdict["ok"] and verdict["skipped_levels"] == [] and verdict["failed_levels"] == []
    monkeypatch.setenv("VERILATOR", "verilator-not-installed-here")
    entry = run_level("rtl_nodes", _context(tfc_build))
    assert not entry["executed"] and entry["status"] == "skipped"
    assert entry["reason"].startswith("skipped: verilator not found (apt-get install verilator")


def test_cppsim_skipped_cleanly_without_finn_hlslib(tfc_build, monkeypatch, tmp_path):
    monkeypatch.delenv(cppsim_level.HLSLIB_ENV, raising=False)
    monkeypatch.setenv("FINN_DEPS", str(tmp_path))
    context = _context(tfc_build)  # prepare_finn first: find_hlslib also looks in finn-plus' deps folder
    if cppsim_level.find_hlslib() is not None:
        pytest.skip("finn-hlslib is installed in finn-plus' deps folder here")
    entry = run_level("cppsim", context)
    assert not entry["executed"]
    assert entry["reason"].startswith("skipped: finn-hlslib not found") and "finn-hlslib" in entry["reason"]


def test_cppsim_names_a_node_that_does_not_compile(tfc_build, monkeypatch, tmp_path):
    """A finn-hlslib folder without the library's headers: every node reported with g++'s first error."""
    fake = tmp_path / "finn-hlslib"
    fake.mkdir()
    (fake / "mvau.hpp").write_text("// not the library\n")
    headers = tmp_path / "ap"
    headers.mkdir()
    (headers / "ap_int.h").write_text("#error onebit test: these are not the ap_int headers\n")
    monkeypatch.setenv(cppsim_level.HLSLIB_ENV, str(fake))
    monkeypatch.setenv(cppsim_level.AP_INT_ENV, str(headers))
    monkeypatch.setenv("ONEBIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("XILINX_HLS", raising=False)
    context = _context(tfc_build, images=2, random=1)
    final = context.final_model
    node = _node(final, "MVAU_hls")
    context.options["nodes"] = [node]
    entry = run_level("cppsim", context)
    assert entry["status"] == "failed" and entry["error"].startswith(f"node {node}: not compiled: "), entry
    row = entry["nodes"][0]
    assert row["node"] == node and row["status"].startswith("not compiled: ") and "error" in row["status"]


needs_hlslib = pytest.mark.skipif(cppsim_level.skip_reason() is not None,
                                  reason="finn-hlslib / ap_int headers not found (ONEBIT_FINN_HLSLIB, ONEBIT_AP_INT)")


@pytest.mark.slow
@needs_hlslib
def test_cppsim_matches_finn_and_catches_a_wrong_library(tfc_build, tmp_path, monkeypatch):
    context = _context(tfc_build, images=5, random=2)
    node = _node(context.final_model, "MVAU_hls")
    context.options["nodes"] = [node]
    entry = run_level("cppsim", context)
    assert entry["executed"] and entry["integer_mismatches"] == 0, entry
    # the same node against a finn-hlslib whose MVAU adds 1 to every accumulation
    broken = tmp_path / "finn-hlslib"
    shutil.copytree(cppsim_level.find_hlslib(), broken)
    mvau = broken / "mvau.hpp"
    mvau.write_text(mvau.read_text().replace("= mac<SIMD>(", "= 1 + mac<SIMD>("))
    monkeypatch.setenv(cppsim_level.HLSLIB_ENV, str(broken))
    entry = run_level("cppsim", context)
    assert entry["nodes"][0]["status"] == "MISMATCH" and entry["integer_mismatches"] > 0


def test_levels_option_and_capture(tfc_build):
    assert parse_levels(None, ("qonnx",)) is None
    assert parse_levels("all", ()) == ["rtl_nodes", "cppsim", "rtl_accelerator"]
    assert parse_levels("qonnx,rtl_nodes", ("qonnx",)) == ["rtl_nodes"]
    with pytest.raises(ValueError, match="unknown level"):
        parse_levels("rtl", ())
    from quant_models.data import load_dataset

    images = load_dataset("fashion-mnist", "test").head(2).images
    graph = tfc_build / "finn" / "step_create_dataflow_partition.onnx"
    from qonnx.core.modelwrapper import ModelWrapper

    out = ModelWrapper(str(graph)).graph.output[0].name
    captured = capture_node_inputs(graph, images, [out])[out]
    assert captured.shape[0] == 2 and np.all(captured == np.rint(captured))


def test_validate_runs_selected_levels(tfc_build, capsys):
    from hw.check.validate import main

    assert main([str(tfc_build), "--limit", "20", "--backend", "model", "--levels", "rtl_nodes,cppsim",
                 "--node-samples", "5"]) == 0
    out = capsys.readouterr().out
    if verilator_path():
        assert "rtl_nodes: nothing to simulate: no *_rtl node in the final HW graph" in out  # an HLS build
    assert "cppsim: " in out
    assert main([str(tfc_build), "--limit", "5", "--levels", "rtl"]) == 2
    assert "unknown level(s) rtl" in capsys.readouterr().err
