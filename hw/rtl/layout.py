"""What onebit's RTL MVAU needs from a FINN MVAU node: its configuration, accumulator format and the
weight/threshold init files, in FINN's MVAU memory layout.

Weights (FINN's `get_hw_compatible_weight_tensor` followed by the `decoupled_verilog_dat` packing of
`make_weight_file`): WMEM = (MH/PE) * (MW/SIMD) words of PE*SIMD bits, word nf*SF + sf holding, at bit
pe*SIMD + s, the weight of input sf*SIMD + s to output channel nf*PE + pe (1 = +1, 0 = -1). One hex
word per line, most significant digit first, padded to whole hex digits: the very file FINN writes
as memblock.dat (tests/hw/rtl checks that).

Thresholds (FINN's `get_hw_compatible_threshold_tensor` order, packed like the weights): NF words of
PE*T*ACC_BITS bits, word nf holding threshold k of output channel nf*PE + pe at bits
(pe*T + k)*ACC_BITS, two's complement when the accumulator is signed. Thresholds are rounded up
(an integer accumulator a satisfies a >= t exactly when a >= ceil(t)) and clipped to
[acc_min, acc_max + 1], which keeps every comparison's outcome and lets them share the
accumulator's width.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hw.driver.packing import PackingError, datatype_info, datatype_range
from onebit.atomic import write_text_atomic
from onebit.errors import OnebitError

WEIGHT_FILE = "weights.dat"
THRESH_FILE = "thresholds.dat"


def _dtype(name: str, what: str, node: str) -> tuple[int, bool, bool]:
    try:
        return datatype_info(name)
    except PackingError as error:
        raise OnebitError(f"{node}: {what} {error}") from None


class FoldGeometry:
    """FINN's folding arithmetic of an MVAU (SF, NF, WMEM) for any record with mw, mh, pe and simd."""

    mw: int
    mh: int
    pe: int
    simd: int

    @property
    def sf(self) -> int:
        return self.mw // self.simd

    @property
    def nf(self) -> int:
        return self.mh // self.pe

    @property
    def wmem(self) -> int:
        return self.sf * self.nf


@dataclass(frozen=True)
class MVAUConfig(FoldGeometry):
    """The attributes of a FINN MVAU node that decide onebit's RTL MVAU (names as FINN's, lower case)."""

    mw: int
    mh: int
    pe: int
    simd: int
    idt: str                     # inputDataType: BINARY (XNOR mode), BIPOLAR, UINT8, INTn, ...
    wdt: str                     # weightDataType: BINARY (XNOR mode) or BIPOLAR
    odt: str                     # outputDataType
    binary_xnor: bool = False    # binaryXnorMode
    no_activation: bool = False  # noActivation: output the raw accumulator
    act_val: int = 0             # ActVal: added to the threshold count
    name: str = "MVAU"
    ram_style: str = "auto"              # weight memory: auto, block, distributed (no URAM: refused)
    ram_style_thresholds: str = "auto"   # threshold memory: auto, block, distributed
    clock_ns: float = 10.0               # target clock period (the board's): decides the pipelining
    tree_stages: int | None = None       # register ranks in each dot product; None: from clock_ns (hw.rtl.timing)
    mem_reg: int = 1                     # output register on the weight / threshold memories

    def __post_init__(self) -> None:
        node = self.name
        if not float(self.clock_ns) > 0:
            raise OnebitError(f"{node}: target clock period must be positive, got {self.clock_ns} ns")
        if self.mem_reg not in (0, 1):
            raise OnebitError(f"{node}: mem_reg must be 0 or 1, got {self.mem_reg}")
        if self.tree_stages is not None and not 0 <= self.tree_stages <= max_tree_stages(self.simd):
            raise OnebitError(f"{node}: tree_stages must be in 0..{max_tree_stages(self.simd)} for SIMD {self.simd}, "
                              f"got {self.tree_stages}")
        for attr in ("mw", "mh", "pe", "simd"):
            if int(getattr(self, attr)) < 1:
                raise OnebitError(f"{node}: {attr.upper()} must be at least 1, got {getattr(self, attr)}")
        if self.mw % self.simd:
            raise OnebitError(f"{node}: SIMD ({self.simd}) must divide MW ({self.mw}); choose another folding")
        if self.mh % self.pe:
            raise OnebitError(f"{node}: PE ({self.pe}) must divide MH ({self.mh}); choose another folding")
        for attr in ("ram_style", "ram_style_thresholds"):
            if getattr(self, attr) == "ultra":
                raise OnebitError(uram_refusal([node]))
            if getattr(self, attr) not in ("auto", "block", "distributed"):
                raise OnebitError(f"{node}: {attr} must be auto, block or distributed, got '{getattr(self, attr)}'")
        ibits, isigned, _ = _dtype(self.idt, "input datatype", node)
        wbits, _, _ = _dtype(self.wdt, "weight datatype", node)
        _dtype(self.odt, "output datatype", node)
        if self.xnor:
            if ibits != 1 or wbits != 1:
                raise OnebitError(f"{node}: XNOR mode needs 1-bit inputs and weights, got {self.idt} x {self.wdt}")
        elif self.wdt != "BIPOLAR":
            raise OnebitError(f"{node}: onebit's RTL MVAU multiplies by +-1 weights only (BIPOLAR, or BINARY in "
                              f"binaryXnorMode), got {self.idt} x {self.wdt}; keep this node on FINN's HLS MVAU")
        elif ibits > 32:
            raise OnebitError(f"{node}: input datatype {self.idt} is wider than 32 bits")

    @property
    def xnor(self) -> bool:
        """XNOR-popcount datapath: FINN's binaryXnorMode, or bipolar x bipolar (FINN computes it the same way)."""
        return bool(self.binary_xnor) or (self.idt == "BIPOLAR" and self.wdt == "BIPOLAR")


    @property
    def stages(self) -> int:
        """Register ranks in each dot product: given, or the fewest the target clock needs (hw.rtl.timing)."""
        if self.tree_stages is not None:
            return int(self.tree_stages)
        from hw.rtl.timing import tree_stages

        ibits = 1 if self.xnor else datatype_info(self.idt)[0]
        return tree_stages(self.simd, ibits, self.xnor, self.clock_ns)

    @property
    def lut_rom_depth(self) -> int:
        """Deepest "auto" weight / threshold memory kept in LUTs at the target clock (0: no limit; deeper ones
        go to block RAM), with the memory output register; without it (mem_reg = 0) no limit, as before."""
        if not self.mem_reg:
            return 0
        from hw.rtl.timing import lut_rom_depth

        return lut_rom_depth(self.clock_ns)

    @property
    def latency(self) -> int:
        """Cycles from a vector's first input beat to its first output beat, without stalls (hw/rtl/README.md)."""
        return self.sf + 3 + self.mem_reg + self.stages

    def exp_cycles(self, n_vectors: int = 1) -> int:
        """Cycles per n_vectors input vectors at full throughput (FINN's get_exp_cycles)."""
        return self.nf * self.sf * n_vectors

    @classmethod
    def from_finn(cls, inst: Any, name: str | None = None) -> "MVAUConfig":
        """From a FINN MVAU custom op (qonnx getCustomOp of an MVAU/MVAU_hls/MVAU_rtl node)."""
        get = inst.get_nodeattr
        return cls(mw=int(get("MW")), mh=int(get("MH")), pe=int(get("PE")), simd=int(get("SIMD")),
                   idt=get("inputDataType"), wdt=get("weightDataType"), odt=get("outputDataType"),
                   binary_xnor=bool(get("binaryXnorMode")), no_activation=bool(get("noActivation")),
                   act_val=int(get("ActVal")), name=name or inst.onnx_node.name,
                   ram_style=get("ram_style"), ram_style_thresholds=get("ram_style_thresholds"),
                   clock_ns=float(_clock_attr(inst)))


def _clock_attr(inst: Any) -> float:
    """onebit's OnebitMVAU_rtl carries its target clock (`clk_ns`, set from the build's synth clock); FINN's
    MVAU nodes do not: the Zynq-7000 boards' 10 ns then."""
    try:
        value = float(inst.get_nodeattr("clk_ns"))
    except Exception:  # qonnx raises AttributeError for an attribute the op does not define
        return 10.0
    return value if value > 0 else 10.0


def max_tree_stages(simd: int) -> int:
    """Most register ranks a dot product of SIMD lanes takes: its clog2(SIMD) adder levels and the one
    that adds popcount(~w) (onebit_mvau checks the same at elaboration)."""
    return max(0, int(simd - 1).bit_length()) + 1


def weight_bits(cfg: MVAUConfig, weights: np.ndarray) -> np.ndarray:
    """(MW, MH) weights as FINN's node holds them -> (MW, MH) bits, 1 meaning +1."""
    w = np.asarray(weights)
    if w.shape != (cfg.mw, cfg.mh):
        raise OnebitError(f"{cfg.name}: weights have shape {w.shape}, expected (MW, MH) = ({cfg.mw}, {cfg.mh})")
    allowed = (0, 1) if cfg.wdt == "BINARY" else (-1, 1)
    if not np.isin(w, allowed).all():
        raise OnebitError(f"{cfg.name}: {cfg.wdt} weights must be {allowed[0]} or {allowed[1]}; "
                          f"found {np.setdiff1d(np.unique(w), allowed)[:5].tolist()}")
    return (w > 0).astype(np.uint8)


def input_bits(cfg: MVAUConfig, x: np.ndarray) -> np.ndarray:
    """XNOR-mode input values (BINARY 0/1 or BIPOLAR -1/+1) -> bits."""
    return (np.asarray(x) > 0).astype(np.uint8)


def accumulator_range(cfg: MVAUConfig, weights: np.ndarray) -> tuple[int, int]:
    """Smallest and largest accumulator value over all inputs of the datatype, for these weights
    (FINN's minimize_accumulator_width with the weight values)."""
    bits = weight_bits(cfg, weights).astype(np.int64)
    if cfg.xnor:
        return 0, cfg.mw  # popcount of MW XNORs
    sign = 2 * bits - 1
    lo_x, hi_x = datatype_range(cfg.idt)
    low = np.minimum(sign * lo_x, sign * hi_x).sum(axis=0)
    high = np.maximum(sign * lo_x, sign * hi_x).sum(axis=0)
    return int(low.min()), int(high.max())


def _bits_for(lo: int, hi: int) -> tuple[int, bool]:
    """(width, signed) of the smallest two's complement or unsigned format holding [lo, hi]."""
    if lo >= 0:
        return max(2, int(hi).bit_length()), False
    return max(2, max((-lo - 1).bit_length(), int(hi).bit_length()) + 1), True


def hw_thresholds(cfg: MVAUConfig, thresholds: np.ndarray, acc_lo: int, acc_hi: int) -> np.ndarray:
    """FINN's (MH or 1, T) thresholds -> (MH, T) int64, rounded up and clipped to [acc_lo, acc_hi + 1]."""
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.ndim != 2 or thr.shape[0] not in (1, cfg.mh) or thr.shape[1] < 1:
        raise OnebitError(f"{cfg.name}: thresholds have shape {thr.shape}, expected (MH, T) = ({cfg.mh}, T) or (1, T)")
    if not np.isfinite(thr).all():
        raise OnebitError(f"{cfg.name}: thresholds contain inf or NaN")
    if thr.shape[0] == 1:
        thr = np.repeat(thr, cfg.mh, axis=0)
    return np.clip(np.ceil(thr), acc_lo, acc_hi + 1).astype(np.int64)


def pack_words(elements: np.ndarray, bits: int) -> list[int]:
    """(n_words, n_elements) unsigned bit patterns -> one int per row, element 0 in the least significant bits."""
    rows = []
    for row in np.asarray(elements, dtype=object):
        word = 0
        for i, value in enumerate(row):
            word |= int(value) << (i * bits)
        rows.append(word)
    return rows


def hex_lines(words: list[int], width: int) -> str:
    digits = max(1, math.ceil(width / 4))
    return "".join(f"{w:0{digits}x}\n" for w in words)


def weight_words(cfg: MVAUConfig, weights: np.ndarray) -> list[int]:
    """The WMEM weight words (see the module docstring for the layout)."""
    bits = weight_bits(cfg, weights)                                      # (MW, MH)
    tiles = bits.T.reshape(cfg.nf, cfg.pe, cfg.sf, cfg.simd).transpose(0, 2, 1, 3)
    flat = tiles.reshape(cfg.wmem, cfg.pe * cfg.simd)                     # bit pe*SIMD + s
    packed = np.packbits(flat, axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


@dataclass
class MVAUImage:
    """Everything the RTL MVAU of one node is built and initialised from."""

    cfg: MVAUConfig
    parameters: dict[str, int | str]    # SystemVerilog parameters of onebit_mvau
    weight_lines: str
    threshold_lines: str | None
    acc_range: tuple[int, int]
    thresholds: np.ndarray | None = field(default=None, repr=False)  # (MH, T) as the hardware holds them

    def write(self, folder: str | Path) -> list[Path]:
        """Write the init files (weights.dat, thresholds.dat) into `folder`, atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [write_text_atomic(folder / WEIGHT_FILE, self.weight_lines)]
        if self.threshold_lines is not None:
            paths.append(write_text_atomic(folder / THRESH_FILE, self.threshold_lines))
        return paths

    def files(self) -> dict[str, str]:
        out = {WEIGHT_FILE: self.weight_lines}
        if self.threshold_lines is not None:
            out[THRESH_FILE] = self.threshold_lines
        return out


def uram_refusal(nodes: list[str]) -> str:
    """The one line that refuses a URAM folding for onebit's RTL (before anything is built)."""
    return (f"{', '.join(nodes)}: ram_style 'ultra' (URAM) is not implemented by onebit's RTL weight memory "
            "(onebit_rom.sv: block or distributed); set ram_style block or distributed for it in a --folding file, "
            "or build with --mvau hls")


def _style(value: str) -> str:
    if value == "ultra":  # refused in MVAUConfig.validate; never silently mapped to block RAM
        raise OnebitError(uram_refusal(["a node"]))
    return value


def mvau_image(cfg: MVAUConfig, weights: np.ndarray, thresholds: np.ndarray | None) -> MVAUImage:
    """Parameters and init-file contents of onebit_mvau for a FINN MVAU's weights (MW, MH) and
    thresholds (MH, T) (None when noActivation)."""
    ibits, isigned, _ = datatype_info(cfg.idt)
    obits, _, _ = datatype_info(cfg.odt)
    lo, hi = accumulator_range(cfg, weights)
    if cfg.no_activation:
        if thresholds is not None:
            raise OnebitError(f"{cfg.name}: noActivation is set but thresholds were given")
        acc_bits, acc_signed = _bits_for(lo, hi)
        thr, nthr, thr_lines = None, 0, None
    else:
        if thresholds is None:
            raise OnebitError(f"{cfg.name}: thresholds are missing (noActivation = 0)")
        thr = hw_thresholds(cfg, thresholds, lo, hi)
        nthr = thr.shape[1]
        if nthr + 1 > (1 << obits):
            raise OnebitError(f"{cfg.name}: {nthr} thresholds give {nthr + 1} levels, more than {cfg.odt} holds")
        acc_bits, acc_signed = _bits_for(lo, hi + 1)
        patterns = thr & ((1 << acc_bits) - 1)
        per_fold = patterns.reshape(cfg.nf, cfg.pe * nthr)               # channel nf*PE + pe, threshold k
        thr_lines = hex_lines(pack_words(per_fold, acc_bits), cfg.pe * nthr * acc_bits)
    if acc_bits > 62:
        raise OnebitError(f"{cfg.name}: accumulator needs {acc_bits} bits; onebit's RTL MVAU supports up to 62")
    parameters = {"MW": cfg.mw, "MH": cfg.mh, "PE": cfg.pe, "SIMD": cfg.simd,
                  "IBITS": 1 if cfg.xnor else ibits, "ISIGNED": int(isigned and not cfg.xnor),
                  "XNOR": int(cfg.xnor), "ACC_BITS": acc_bits, "ACC_SIGNED": int(acc_signed),
                  "NTHR": nthr, "OBITS": obits, "ACT_VAL": int(cfg.act_val),
                  "RAM_STYLE": _style(cfg.ram_style), "RAM_STYLE_THRESHOLDS": _style(cfg.ram_style_thresholds),
                  "MEM_REG": int(cfg.mem_reg), "TREE_STAGES": cfg.stages, "LUT_ROM_DEPTH": cfg.lut_rom_depth}
    weights_text = hex_lines(weight_words(cfg, weights), cfg.pe * cfg.simd)
    return MVAUImage(cfg, parameters, weights_text, thr_lines, (lo, hi), thr)
