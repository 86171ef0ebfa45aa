"""onebit's RTL nodes as FINN custom ops: execute_node in Python (FINN's semantics) equals execute_node in
Verilator (exec_mode rtlsim) for the XNOR, UINT8 x bipolar and raw-popcount MVAU and the max pool, and the
Vivado-side contract (generate_hdl files, get_rtl_file_list, code_generation_ipi Tcl) without Vivado.

The node configurations are test_rtl_mvau's / test_rtl_pool_yosys', so the Verilator builds are shared.
"""
from __future__ import annotations

import re
from pathlib import Path
import shutil
import subprocess

import numpy as np
import pytest
from test_rtl_mvau import make_case, random_inputs

verilator = pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator not installed (tools/setup_env.sh)")


def onebit_mvau_node(cfg, domain="finn.custom_op.fpgadataflow.rtl"):
    from onnx import helper
    from qonnx.custom_op.registry import getCustomOp

    import hw.rtl.custom_op  # noqa: F401  (registers the op types in FINN's RTL domain)

    inputs = ["inp", "weights"] + ([] if cfg.no_activation else ["thresh"])
    node = helper.make_node("OnebitMVAU_rtl", inputs, ["outp"], domain=domain, backend="fpgadataflow",
                            name=cfg.name, MW=cfg.mw, MH=cfg.mh, PE=cfg.pe, SIMD=cfg.simd, inputDataType=cfg.idt,
                            weightDataType=cfg.wdt, outputDataType=cfg.odt, binaryXnorMode=int(cfg.binary_xnor),
                            noActivation=int(cfg.no_activation), ActVal=cfg.act_val, mem_mode="internal_embedded",
                            numInputVectors=[5])
    return node, getCustomOp(node)


def execute(inst, cfg, weights, thresholds, x, mode):
    inst.set_nodeattr("exec_mode", mode)
    context = {"inp": x.astype(np.float32), "weights": weights.astype(np.float32),
               "outp": np.zeros((x.shape[0], cfg.mh), np.float32)}
    if thresholds is not None:
        context["thresh"] = thresholds.astype(np.float32)
    inst.execute_node(context, None)
    return context["outp"]


@verilator
@pytest.mark.parametrize("name", ["xnor_folded", "uint8_first_layer", "score_popcount"])
def test_execute_node_python_equals_verilator(name):
    cfg, weights, thresholds = make_case(name)
    _, inst = onebit_mvau_node(cfg)
    x = random_inputs(cfg, 5, seed=4)
    python = execute(inst, cfg, weights, thresholds, x, "cppsim")    # FINN's MVAU.execute_node
    rtl = execute(inst, cfg, weights, thresholds, x, "rtlsim")       # onebit_mvau in Verilator
    np.testing.assert_array_equal(python, rtl)
    assert len(np.unique(python)) > 1  # outputs that could differ


@verilator
def test_pool_execute_node_python_equals_verilator():
    from onnx import helper
    from qonnx.custom_op.registry import getCustomOp

    import hw.rtl.custom_op  # noqa: F401

    node = helper.make_node("OnebitPool_rtl", ["inp"], ["outp"], domain="finn.custom_op.fpgadataflow.rtl",
                            backend="fpgadataflow", name="Pool_0", Channels=6, PE=2, KernelSize=[2, 2],
                            Function="MaxPool", OutImgDims=[3, 3], InputDataType="BINARY", OutputDataType="BINARY",
                            BatchSize=2)
    inst = getCustomOp(node)
    windows = np.random.default_rng(2).integers(0, 2, (2, 3, 3, 24)).astype(np.float32)
    outputs = {}
    for mode in ("cppsim", "rtlsim"):
        inst.set_nodeattr("exec_mode", mode)
        context = {"inp": windows, "outp": np.zeros((2, 3, 3, 6), np.float32)}
        inst.execute_node(context, None)
        outputs[mode] = context["outp"]
    np.testing.assert_array_equal(outputs["cppsim"], outputs["rtlsim"])


def test_onebit_domain_resolves_without_registration():
    """The classes live in onebit's own module: getCustomOp finds them by domain like FINN's."""
    cfg, _, _ = make_case("xnor_folded")
    _, inst = onebit_mvau_node(cfg, domain="hw.rtl.custom_op")
    assert type(inst).__name__ == "OnebitMVAU_rtl"
    assert inst.get_exp_cycles() == cfg.exp_cycles(5)  # FINN's cycle estimate, which the RTL meets


def test_generate_hdl_and_ipi_tcl_contract(tmp_path):
    """What FINN's CreateStitchedIP does with an RTL node on a Vivado host: source the Tcl of
    code_generation_ipi. Checked here: every add_files names a file get_rtl_file_list lists and
    generate_hdl wrote; the module reference is the wrapper's module, named after the node."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model
    from onnx import TensorProto, helper

    cfg, weights, thresholds = make_case("uint8_first_layer")
    node, inst = onebit_mvau_node(cfg)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, cfg.mw])],
                              [helper.make_tensor_value_info("outp", TensorProto.FLOAT, [1, cfg.mh])])
    model = ModelWrapper(qonnx_make_model(graph))
    model.set_initializer("weights", weights.astype(np.float32))
    model.set_initializer("thresh", thresholds.astype(np.float32))
    code_gen = tmp_path / "hw" / "code_gen_ipgen_node"
    inst.set_nodeattr("code_gen_dir_ipgen", str(code_gen))
    inst.code_generation_ipgen(model, "xc7z020clg400-1", 10.0)
    files = inst.get_rtl_file_list(abspath=True)
    assert all(Path(f).is_file() for f in files)
    # the wrapper in the node's folder, the shared sources once per build beside the nodes' folders
    shared = tmp_path / "hw" / "onebit_rtl_sv"
    assert files[0] == f"{code_gen}/{inst.get_nodeattr('gen_top_module')}_wrapper.v"
    assert files[1:] == [str(shared / name) for name in inst.SOURCES]
    assert not list(code_gen.glob("*.sv"))
    assert inst.get_nodeattr("ip_path") == str(code_gen)
    tcl = inst.code_generation_ipi()
    assert tcl[0] == f"add_files -norecurse {files[0]}"
    # a shared source is added only where the project does not hold it yet (one definition per module)
    assert [re.fullmatch(r"if \{\[llength \[get_files -quiet (\S+)\]\] == 0\} \{ add_files -norecurse \1 \}",
                         c).group(1) for c in tcl[1:-1]] == files[1:]
    top = inst.get_nodeattr("gen_top_module")
    assert tcl[-1] == f"create_bd_cell -type module -reference {top} {cfg.name}"
    wrapper = (code_gen / f"{top}_wrapper.v").read_text()
    assert re.search(rf"^module {top} \(", wrapper, re.M)
    # the ports Vivado infers the AXI-stream interfaces from (FINN's names), widths padded to bytes
    assert f"input  wire [{inst.get_instream_width_padded() - 1}:0] in0_V_TDATA" in wrapper
    assert f"output wire [{inst.get_outstream_width_padded() - 1}:0] out0_V_TDATA" in wrapper
    # FINN's RTL wrapper templates' interface attributes (finn-rtllib fifo_template.v): clock with its buses
    # and reset, active-low reset
    assert re.search(r'\(\* X_INTERFACE_PARAMETER = "ASSOCIATED_BUSIF in0_V:out0_V, ASSOCIATED_RESET ap_rst_n" \*\)\s*'
                     r'\(\* X_INTERFACE_INFO = "xilinx.com:signal:clock:1.0 ap_clk CLK" \*\)\s*input\s+wire ap_clk', wrapper)
    assert re.search(r'\(\* X_INTERFACE_PARAMETER = "POLARITY ACTIVE_LOW" \*\)\s*(\(\*[^*]*\*\)\s*)?input\s+wire ap_rst_n',
                     wrapper)
    # init files by absolute path, equal to onebit's layout (weights.dat is FINN's memblock layout)
    assert f'.WEIGHT_FILE("{code_gen}/weights.dat")' in wrapper
    # a second node of the same design names the very same shared files
    node2, inst2 = onebit_mvau_node(cfg)
    inst2.set_nodeattr("code_gen_dir_ipgen", str(tmp_path / "hw" / "code_gen_ipgen_other"))
    inst2.code_generation_ipgen(model, "xc7z020clg400-1", 10.0)
    assert inst2.get_rtl_file_list(abspath=True)[1:] == files[1:]
    if shutil.which("verilator"):  # the generated file set elaborates on its own (what Vivado reads)
        lint = subprocess.run(["verilator", "--lint-only", "-Wno-fatal", "-Wno-lint", "-Wno-style", "--top-module",
                               top, *files], capture_output=True, text=True, cwd=code_gen)
        assert lint.returncode == 0, lint.stderr[-2000:]


def test_autofold_and_every_preset_take_the_rtl_step():
    from hw.boards import BOARDS
    from hw.finn.build import _step_list
    from hw.rtl.yosys import family_for_part
    from hw.finn.folding import FoldingSpec, target_fps

    for spec in (FoldingSpec("auto"), target_fps(1000), FoldingSpec("file")):
        steps = _step_list(spec, "rtl")
        assert steps.index("step_minimize_bit_width") < steps.index("step_onebit_rtl_nodes") < \
            steps.index("step_hw_codegen")
        assert "step_onebit_rtl_nodes" not in _step_list(spec, "hls")
    # the step is board-independent; each preset's part maps to the yosys family of its resources_synth
    families = {name: family_for_part(board.fpga_part) for name, board in BOARDS.items()}
    assert families["Pynq-Z1"] == "xc7" and families["ZCU104"] == "xcup", families


def test_uram_folding_is_refused_before_the_build_not_downgraded(tfc_build):
    """A folding asking URAM for an MVAU's weights (auto-fold on ZCU104/KV260 when BRAM is short, a folding file)
    would overflow the block RAM onebit's ROM infers: `--mvau rtl` refuses it in one line naming the node."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from hw.finn.rtl_mvau import replace_with_rtl
    from hw.rtl.layout import MVAUConfig
    from onebit.errors import OnebitError

    model = ModelWrapper(str(tfc_build / "finn" / "step_minimize_bit_width.onnx"))
    node = [n for n in model.graph.node if n.op_type == "MVAU_hls"][1]  # an XNOR layer onebit's RTL takes
    assert MVAUConfig.from_finn(getCustomOp(node), node.name).ram_style != "ultra"  # accepted as it is
    replace_with_rtl(ModelWrapper(str(tfc_build / "finn" / "step_minimize_bit_width.onnx")))  # and replaced
    getCustomOp(node).set_nodeattr("ram_style", "ultra")
    with pytest.raises(OnebitError) as error:
        replace_with_rtl(model)
    message = str(error.value)
    assert "\n" not in message and node.name in message and "URAM" in message and "--mvau hls" in message
    with pytest.raises(OnebitError, match="URAM"):
        MVAUConfig.from_finn(getCustomOp(node), node.name)
