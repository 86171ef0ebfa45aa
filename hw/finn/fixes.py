"""Corrections to finn-plus 1.6.1 behaviour that would otherwise build wrong hardware (applied by
hw.finn.env.prepare_finn, so every FINN run of onebit gets them; each is found by hw/check/verify.py and tested).

XNOR-popcount accumulator range. `MVAU.minimize_accumulator_width` sizes an XNOR-mode layer's accumulator
as if it computed the dot product of {0,1} inputs with the +-1 weights, i.e. [-(#negative weights),
#positive weights] of the worst column. The hardware accumulates the *popcount* of agreeing bits, which
ranges over [0, MW]. For a column with as many -1 as +1 weights FINN picks INT(log2(MW/2)+2) bits, and
`RoundAndClipThresholds` then clips every threshold above MW/2-ish to that type's max + 1: popcounts
between the clip and the real threshold fire where they must not (found on a CNV-w1a1 BinaryDuo build:
thresholds 1048.25 clipped to 1024 in a 1638-input layer; 274 of 1,000 test images had wrong scores at
the HW-layer level while the streamlined graph was exact), and the accumulator itself could overflow.
The fix widens the range FINN computed so it contains [0, MW], keeping FINN's signedness and its
byte-rounding of a graph's last no-activation layer. Written here because finn-plus has no option for it.
"""
from __future__ import annotations

import math

_MARK = "_onebit_xnor_popcount_range"


def _integer_type_covering(low: int, high: int):
    from qonnx.core.datatype import DataType

    if low >= 0:
        return DataType[f"UINT{max(1, math.ceil(math.log2(high + 1)))}"]
    return DataType[f"INT{math.ceil(math.log2(max(-low, high + 1))) + 1}"]


def _xnor_popcount_range() -> None:
    from finn.custom_op.fpgadataflow.matrixvectoractivation import MVAU
    from qonnx.core.datatype import DataType
    from qonnx.util.basic import roundup_to_integer_multiple

    original = MVAU.minimize_accumulator_width
    if getattr(original, _MARK, False):
        return

    def minimize_accumulator_width(self, model, datatype_only=False):
        adt = original(self, model, datatype_only)
        if not self.get_nodeattr("binaryXnorMode"):
            return adt
        popcount_max = int(self.get_nodeattr("MW"))
        if adt.min() <= 0 and adt.max() >= popcount_max:
            return adt
        fixed = _integer_type_covering(int(min(adt.min(), 0)), int(max(adt.max(), popcount_max)))
        if self.get_nodeattr("noActivation"):
            if model.find_direct_successors(self.onnx_node) is None:  # FINN's byte rounding of a last layer
                bits = roundup_to_integer_multiple(fixed.bitwidth(), 8)
                fixed = DataType[fixed.name.replace(str(fixed.bitwidth()), str(bits))]
            self.set_nodeattr("outputDataType", fixed.name)
        self.set_nodeattr("accDataType", fixed.name)
        return fixed

    setattr(minimize_accumulator_width, _MARK, True)
    MVAU.minimize_accumulator_width = minimize_accumulator_width


def apply() -> None:
    """Install every correction (idempotent)."""
    _xnor_popcount_range()
