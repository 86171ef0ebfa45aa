"""Board presets: FPGA part, FINN shell flow, default clock and the device's resource budget.

One preset per PYNQ board onebit targets. The part names are the ones finn-plus itself uses
(`finn.util.basic.pynq_part_map`), so a preset can be handed to FINN's builder unchanged (`finn_board`
is the key FINN knows the board by). Resource totals are the device data-sheet figures (AMD DS190 for
Zynq-7000, DS891 for Zynq UltraScale+, DS986 for the K26 SOM): the budget a build's estimated LUT/BRAM
is compared against; `axi_port_bits` the width of the AXI port the DMAs use (the I/O bound). Default clocks: 100 MHz on the Zynq-7000 boards (the FCLK0 BNN-PYNQ and FINN's
Pynq-Z1 notebooks use), 200 MHz on the UltraScale+ boards (finn-examples builds at 5 ns).

This module imports nothing heavy: the folding/auto-fold code and the CLI may use it cheaply.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from onebit.errors import OnebitError


class UnknownBoardError(OnebitError):
    """A board name that no preset matches."""


@dataclass(frozen=True)
class Board:
    """One board preset. Resource counts are whole-device totals (the PL of the SoC)."""

    name: str  # onebit's canonical name, e.g. "Pynq-Z1"
    finn_board: str  # the key finn-plus uses (DataflowBuildConfig.board, pynq_part_map)
    fpga_part: str
    shell_flow: str  # finn.builder.build_dataflow_config.ShellFlowType member name
    clock_ns: float  # default synthesis clock period
    lut: int
    ff: int
    bram36: int  # 36 Kb block RAMs (one BRAM36 = two BRAM_18K as FINN's estimates count them)
    dsp: int
    uram: int = 0
    # Data width of the PS-PL AXI port the accelerator's DMAs use: finn-plus' Zynq flow sizes its IODMAs to
    # it (ZynqBuild -> InsertIODMA(pynq_native_port_width[board])): the 64-bit HP ports of Zynq-7000, the
    # 128-bit HP ports of Zynq UltraScale+. The IODMAs run on the PL clock (the synthesis clock, FCLK0).
    axi_port_bits: int = 64

    @property
    def clock_mhz(self) -> float:
        return 1000.0 / self.clock_ns

    @property
    def io_bytes_per_cycle(self) -> int:
        """Bytes one IODMA moves per PL clock cycle at most (one AXI beat of the native port)."""
        return self.axi_port_bits // 8

    def io_bound_fps(self, bytes_per_image: int) -> float:
        """Images/s one DMA direction can move at most: the I/O bound of any folding on this board."""
        beats = -(-int(bytes_per_image) // self.io_bytes_per_cycle)
        return self.clock_mhz * 1e6 / max(1, beats)

    @property
    def bram18(self) -> int:
        """BRAM in the 18 Kb units FINN's estimate reports use."""
        return 2 * self.bram36

    def budget(self) -> dict[str, int]:
        """Resource totals keyed like FINN's estimate reports (LUT, FF, BRAM_18K, URAM, DSP)."""
        return {"LUT": self.lut, "FF": self.ff, "BRAM_18K": self.bram18, "URAM": self.uram, "DSP": self.dsp}

    def to_dict(self) -> dict:
        return {**asdict(self), "clock_mhz": self.clock_mhz}


_XC7Z020 = dict(fpga_part="xc7z020clg400-1", lut=53_200, ff=106_400, bram36=140, dsp=220, uram=0)

BOARDS: dict[str, Board] = {
    board.name: board
    for board in (
        Board("Pynq-Z1", "Pynq-Z1", shell_flow="VIVADO_ZYNQ", clock_ns=10.0, **_XC7Z020),
        Board("Pynq-Z2", "Pynq-Z2", shell_flow="VIVADO_ZYNQ", clock_ns=10.0, **_XC7Z020),
        Board(
            "Ultra96-V2", "Ultra96-V2", fpga_part="xczu3eg-sbva484-1-i", shell_flow="VIVADO_ZYNQ",
            clock_ns=5.0, lut=70_560, ff=141_120, bram36=216, dsp=360, uram=0, axi_port_bits=128,
        ),
        Board(
            "ZCU104", "ZCU104", fpga_part="xczu7ev-ffvc1156-2-e", shell_flow="VIVADO_ZYNQ",
            clock_ns=5.0, lut=230_400, ff=460_800, bram36=312, dsp=1_728, uram=96, axi_port_bits=128,
        ),
        Board(
            "KV260", "KV260_SOM", fpga_part="xck26-sfvc784-2LV-c", shell_flow="VIVADO_ZYNQ",
            clock_ns=5.0, lut=117_120, ff=234_240, bram36=144, dsp=1_248, uram=64, axi_port_bits=128,
        ),
    )
}

# Spellings users type (FINN's own keys, the original Ultra96 name): matched case-insensitively.
_ALIASES = {"kv260_som": "KV260", "kv260-som": "KV260", "ultra96": "Ultra96-V2", "ultra96v2": "Ultra96-V2"}


def board_names() -> list[str]:
    return list(BOARDS)


def get_board(name: str) -> Board:
    """The preset for `name` (case-insensitive; FINN's key works too); UnknownBoardError lists the known ones."""
    key = str(name).strip().lower()
    for board in BOARDS.values():
        if board.name.lower() == key:
            return board
    if key in _ALIASES:
        return BOARDS[_ALIASES[key]]
    import difflib

    names = {board.name.lower(): board.name for board in BOARDS.values()} | {k: BOARDS[v].name for k, v in _ALIASES.items()}
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    hint = f"did you mean {names[close[0]]}? " if close else ""
    raise UnknownBoardError(
        f"unknown board '{name}'; {hint}known boards: {', '.join(BOARDS)} (pass one of them to --board)"
    )
