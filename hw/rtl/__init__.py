"""onebit's own SystemVerilog accelerator blocks (hw/rtl/sv), their Verilator simulation driven from
Python and their yosys resource counts; see hw/rtl/README.md.

Public API:
  MVAUConfig, mvau_image, RTLMvau          the XNOR-popcount / add-subtract MVAU (layout.py, nodes.py)
  MaxPoolConfig, RTLMaxPool                the window max pool (nodes.py)
  build_simulator, run_stream, StreamDeadlock   Verilator builds and stream runs (verilator.py)
  synthesize, Resources                    yosys synth_xilinx counts (yosys.py)
  estimate_timing, Timing                  estimated Fmax: yosys sta + routing allowance (timing.py)

Not imported here (they import finn-plus, seconds to load): custom_op.py (OnebitMVAU_rtl / OnebitPool_rtl,
FINN custom ops), stitch.py (the whole accelerator in Verilator), fifo_sizing.py (its FIFO depths by
simulation), node_rates.py (every node alone, free-running), synth_report.py (resources_synth).
"""
from hw.rtl.layout import MVAUConfig, MVAUImage, mvau_image
from hw.rtl.nodes import MaxPoolConfig, OutputMismatch, RTLMaxPool, RTLMvau, Simulation, compare_outputs
from hw.rtl.timing import Timing, estimate_timing
from hw.rtl.verilator import StreamDeadlock, StreamResult, build_simulator, run_stream
from hw.rtl.yosys import Resources, synthesize

__all__ = ["MVAUConfig", "MVAUImage", "mvau_image", "MaxPoolConfig", "RTLMaxPool", "RTLMvau", "Simulation", "OutputMismatch", "compare_outputs",
           "StreamDeadlock", "StreamResult", "build_simulator", "run_stream", "Resources", "synthesize",
           "Timing", "estimate_timing"]
