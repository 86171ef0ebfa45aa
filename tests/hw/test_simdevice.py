"""The board backend's real pynq path on this x86 machine, through the project's simulated pynq device.

pynq 4.0.0 parses the bitstream's .hwh, builds the overlay's IP drivers, allocates the DMA buffers and
programs the IODMA registers on `SimulatedDevice`; the first operation that needs the FPGA or the PS
(programming the bitstream, the PL clock registers, ap_start) stops with a one-line error.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("pynq")

from hw.driver import Accelerator, DriverError, IOSpec  # noqa: E402
from hw.driver.overlay import OnebitOverlay  # noqa: E402
from hw.driver import BoardRequiredError  # noqa: E402
from hw.driver.simdevice import SimulatedDevice  # noqa: E402

IDMA_BASE, ODMA_BASE = 0x43C0_0000, 0x43C1_0000


def _hwh(idma: str = "idma0", odma: str = "odma0") -> str:
    """A hardware handoff with the parts of a FINN zynq-iodma shell that PYNQ reads: the Zynq-7000 PS (clock
    settings, address map) and the two IODMA HLS blocks with their AXI-lite register ranges. Written by hand
    for this test (no Vivado here): the structure is Vivado's, reduced to those elements."""
    clocks = "".join(
        f'<PARAMETER NAME="PCW_FPGA_FCLK{i}_ENABLE" VALUE="{int(i == 0)}"/>'
        f'<PARAMETER NAME="PCW_FCLK{i}_PERIPHERAL_DIVISOR0" VALUE="5"/>'
        f'<PARAMETER NAME="PCW_FCLK{i}_PERIPHERAL_DIVISOR1" VALUE="2"/>'
        f'<PARAMETER NAME="PCW_FCLK{i}_PERIPHERAL_CLKSRC" VALUE="IO PLL"/>'
        f'<PARAMETER NAME="PCW_FPGA{i}_PERIPHERAL_FREQMHZ" VALUE="100"/>'
        f'<PARAMETER NAME="PCW_ACT_FPGA{i}_PERIPHERAL_FREQMHZ" VALUE="100.000000"/>' for i in range(4))

    def memrange(name: str, base: int) -> str:
        return (f'<MEMRANGE ADDRESSBLOCK="Reg" BASENAME="C_S_AXI_CONTROL_BASEADDR" BASEVALUE="{base:#x}" '
                f'HIGHNAME="C_S_AXI_CONTROL_HIGHADDR" HIGHVALUE="{base + 0xFFFF:#x}" INSTANCE="{name}" '
                f'IS_DATA="TRUE" IS_INSTRUCTION="TRUE" MASTERBUSINTERFACE="M_AXI_GP0" MEMTYPE="REGISTER" '
                f'SLAVEBUSINTERFACE="s_axi_control"/>')

    def module(name: str) -> str:
        return (f'<MODULE FULLNAME="/{name}" HWVERSION="1.0" INSTANCE="{name}" IPTYPE="PERIPHERAL" '
                f'MODCLASS="PERIPHERAL" MODTYPE="{name}" VLNV="xilinx.com:hls:{name}:1.0">'
                f'<PARAMETERS><PARAMETER NAME="Component_Name" VALUE="finn_design_{name}_0"/></PARAMETERS>'
                f'<PORTS><PORT DIR="I" NAME="ap_clk" SIGIS="clk" SIGNAME="processing_system7_0_FCLK_CLK0"/>'
                f'</PORTS></MODULE>')

    return ('<?xml version="1.0" encoding="UTF-8" standalone="no" ?>'
            '<EDKSYSTEM EDWVERSION="1.2" TIMESTAMP="Mon Nov 23 00:00:00 2026" VIVADOVERSION="2024.2">'
            '<SYSTEMINFO ARCH="zynq" DEVICE="7z020" NAME="top" PACKAGE="clg400" SPEEDGRADE="-1"/>'
            '<EXTERNALPORTS/><MODULES>'
            '<MODULE FULLNAME="/zynq_ps" HWVERSION="5.5" INSTANCE="zynq_ps" IPTYPE="PERIPHERAL" '
            'MODCLASS="PROCESSOR" MODTYPE="processing_system7" VLNV="xilinx.com:ip:processing_system7:5.5">'
            f'<PARAMETERS>{clocks}</PARAMETERS>'
            f'<MEMORYMAP>{memrange(idma, IDMA_BASE)}{memrange(odma, ODMA_BASE)}</MEMORYMAP>'
            '<PORTS><PORT DIR="O" NAME="FCLK_CLK0" SIGIS="clk" SIGNAME="processing_system7_0_FCLK_CLK0"/></PORTS>'
            f'</MODULE>{module(idma)}{module(odma)}</MODULES></EDKSYSTEM>')


@pytest.fixture
def spec(tfc_build) -> IOSpec:
    return IOSpec.load(tfc_build / "driver" / "io.json")


@pytest.fixture
def bitfile(tmp_path):
    bit = tmp_path / "finn-accel.bit"
    bit.write_bytes(b"\0" * 64)  # never read: the simulated device refuses to program it
    (tmp_path / "finn-accel.hwh").write_text(_hwh())
    return bit


@pytest.fixture(autouse=True)
def _restore_pynq_clocks():
    # pynq's Overlay points the global Clocks class at its device; give it back to the default afterwards.
    from pynq.ps import Clocks

    yield
    Clocks.device = None


def test_board_backend_stops_where_the_fpga_is_needed(spec, bitfile):
    device = SimulatedDevice()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DriverError) as error:
            Accelerator(spec, backend="board", bitfile=bitfile, device=device)
    message = str(error.value)
    assert "\n" not in message and "needs a PYNQ board" in message and "backend='model'" in message
    # pynq got that far: it parsed the .hwh (Zynq-7000 parser) and built the address map of the IODMAs.
    assert device.arch == "armv7l"
    assert device.ip_dict["idma0"]["phys_addr"] == IDMA_BASE and device.ip_dict["odma0"]["phys_addr"] == ODMA_BASE


def test_pynq_overlay_allocates_and_programs_the_iodma_up_to_ap_start(spec, bitfile):
    device = SimulatedDevice()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        overlay = OnebitOverlay(str(bitfile), spec, batch_size=4, download=False, device=device)
    # pynq's own IP drivers (DefaultIP over MMIO on this device) for the IODMAs named in io.json.
    assert type(overlay.idma).__name__ == "DefaultIP" and overlay.idma.mmio.base_addr == IDMA_BASE
    assert overlay.ibuf.shape == (4,) + spec.ishape_packed[1:] and overlay.ibuf.dtype == np.uint8
    assert overlay.obuf.shape == (4,) + spec.oshape_packed[1:]
    assert overlay.ibuf.device is device and overlay.ibuf.device_address != overlay.obuf.device_address

    packed = np.random.default_rng(0).integers(0, 256, (3,) + spec.ishape_packed[1:], dtype=np.uint8)
    with pytest.raises(BoardRequiredError, match=r"^starting odma0 \(ap_start\) needs the accelerator"):
        overlay.transfer(packed)
    # Everything before ap_start happened as on a board: the input bytes in the DMA buffer, the output
    # DMA's buffer address (low, high word) and repetition count in its registers.
    np.testing.assert_array_equal(overlay.ibuf[:3], packed)
    address = overlay.obuf.device_address
    assert device.register("odma0", 0x10) == address & 0xFFFFFFFF
    assert device.register("odma0", 0x14) == address >> 32
    assert device.register("odma0", 0x1C) == 3
    assert device.register("idma0", 0x1C) == 0  # the input DMA is started after the output DMA: not reached

    overlay.batch_size = 8  # re-allocates on the same device
    assert overlay.ibuf.shape[0] == 8 and overlay.ibuf.device is device


def test_simulated_device_errors_are_one_line(tmp_path):
    device = SimulatedDevice()
    bit = tmp_path / "a.bit"
    bit.write_bytes(b"\0")
    with pytest.raises(BoardRequiredError, match="no hardware handoff a.hwh"):
        device.get_bitfile_metadata(str(bit))
    (tmp_path / "a.hwh").write_text('<EDKSYSTEM><EXTERNALPORTS/><MODULES/></EDKSYSTEM>')
    with pytest.raises(BoardRequiredError, match="no Zynq-7000 or Zynq UltraScale"):
        device.get_bitfile_metadata(str(bit))
    with pytest.raises(BoardRequiredError, match="register 0xf8000170 of the processing system"):
        device.read_registers(0xF8000170, 4)
