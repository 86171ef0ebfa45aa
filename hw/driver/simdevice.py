"""A pynq Device for a machine without an FPGA: runs the board backend's real pynq code up to the hardware.

    from driver import Accelerator
    from driver.simdevice import SimulatedDevice
    Accelerator("driver/io.json", backend="board", device=SimulatedDevice())   # -> DriverError at the hardware

pynq 4 takes a `device=` on Overlay, MMIO and allocate; this device gives them what a board's device would,
from host memory, and stops with `BoardRequiredError` (one line: what needs the board, what to do instead)
at the first operation that needs the programmable logic or the processing system:

  * metadata   the bitfile's .hwh is parsed by pynq's HWH parser (Zynq-7000 or Zynq UltraScale+ flavour,
               chosen from the PS in the file, because pynq picks it from the host CPU, x86 here). On a board
               pynq 4 uses pynqmetadata's parser, which needs a complete Vivado handoff (bus interfaces,
               nets); the HWH parser reads the same address map and clock settings from less;
  * buffers    `allocate` returns pynq `PynqBuffer`s in host memory at distinct fake physical addresses;
               flush/invalidate are no-ops (there is no cache between host and a device that is host memory);
  * registers  reads/writes inside an IP of the .hwh go to a register file (the DMA address and count
               registers the driver programs can be read back); `ap_ctrl` (offset 0) reads as idle;
  * the board  programming the bitstream (`download`), touching a PS register (e.g. the PL clocks) and
               writing ap_start to an IP raise `BoardRequiredError`: no simulation pretends to be the FPGA.

It never registers itself with pynq's device probing (no `_probe_`), so pynq's own device list is untouched.
Imports numpy and pynq only, like the rest of the driver.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pynq.buffer import PynqBuffer
from pynq.pl_server.device import Device
from pynq.pl_server.hwh_parser import get_hwh_name

from .io_spec import BoardRequiredError

AP_CTRL = 0x00
AP_START, AP_IDLE = 0x1, 0x4
# The PS families pynq's HWH parser knows, and the CPU architecture of each (what pynq.ps.Clocks dispatches on).
PS_ARCH = {"processing_system7": "armv7l", "zynq_ultra_ps_e": "aarch64"}
BUFFER_BASE = 0x1000_0000  # fake physical addresses of allocated buffers start here (page aligned)


class HostBuffer(PynqBuffer):
    """pynq's PynqBuffer in host memory. numpy 2 added a read-only `ndarray.device` (array API), which
    pynq 4.0.0's PynqBuffer assigns; a PYNQ image's numpy 1.x has none. Shadowing it with a plain class
    attribute lets the same pynq buffer code run under this venv's numpy 2."""

    device = None


def _hwh_parser(hwh: Path):
    # pynq.pl_server.hwh_parser.HWH is chosen from the *host* CPU (x86 -> the base class, which skips the PS
    # and its address map); the family is in the file, so pick the parser from it.
    from pynq.pl_server import hwh_parser

    text = hwh.read_text(errors="replace")
    if 'MODTYPE="processing_system7"' in text:
        return hwh_parser._HWHZynq(str(hwh)), PS_ARCH["processing_system7"]
    if 'MODTYPE="zynq_ultra_ps_e"' in text:
        return hwh_parser._HWHUltrascale(str(hwh)), PS_ARCH["zynq_ultra_ps_e"]
    raise BoardRequiredError(f"{hwh} has no Zynq-7000 or Zynq UltraScale+ processing system; onebit's boards "
                             "use one of those, rebuild for a supported board")


class SimulatedDevice(Device):
    """pynq Device without hardware: metadata, buffers and IP registers in host memory, the board's own
    operations refused with `BoardRequiredError`."""

    def __init__(self, tag: str = "onebit-simulated") -> None:
        super().__init__(tag)
        self.name = tag
        self.arch = "x86_64"  # until a .hwh says which PS the bitstream was built for
        self.capabilities = {"REGISTER_RW": True, "MEMORY_MAPPED": False, "CALLABLE": False}
        self.registers: dict[int, int] = {}   # absolute 32-bit word address -> value written
        self.buffers: list[HostBuffer] = []
        self.ip_dict: dict = {}
        self.mem_dict: dict = {}
        self._next_address = BUFFER_BASE

    # -- metadata --------------------------------------------------------------------------------
    def get_bitfile_metadata(self, bitfile_name: str):
        hwh = Path(get_hwh_name(bitfile_name))
        if not hwh.is_file():
            raise BoardRequiredError(f"no hardware handoff {hwh.name} next to {bitfile_name}; FINN writes it with "
                                     "the bitfile (Vivado), copy both from the build's bitfile/ folder")
        parser, self.arch = _hwh_parser(hwh)
        # pynq 4's Device.set_bitfile_name and Overlay.download read these; the legacy HWH parser leaves them
        # out (on a board, pynqmetadata's parser fills them from a complete Vivado handoff).
        parser.systemgraph = None
        for clock in parser.clock_dict.values():
            clock.setdefault("frequency", None)
        return parser

    # -- the board's own operations --------------------------------------------------------------
    def download(self, bitstream, parser=None) -> None:
        raise BoardRequiredError(f"programming {Path(bitstream.bitfile_name).name} into the FPGA needs a PYNQ "
                                 "board; off the board use backend='model'")

    def _ip_at(self, address: int) -> tuple[str, int] | None:
        for name, ip in self.ip_dict.items():
            base = ip.get("phys_addr")
            if base is not None and base <= address < base + ip.get("addr_range", 0):
                return name, address - base
        return None

    def _board_register(self, address: int, what: str) -> BoardRequiredError:
        return BoardRequiredError(f"{what} register {address:#x} of the processing system (e.g. the PL clocks) "
                                  "needs a PYNQ board; off the board use backend='model'")

    # -- register access (pynq.MMIO with REGISTER_RW) --------------------------------------------
    def read_registers(self, address: int, length: int) -> bytes:
        found = self._ip_at(address)
        if found is None:
            raise self._board_register(address, "reading")
        words = []
        for word in range(address, address + length, 4):
            value = self.registers.get(word, 0)
            if self._ip_at(word)[1] == AP_CTRL:
                value |= AP_IDLE  # an HLS block that was never started is idle
            words.append(value & 0xFFFFFFFF)
        return np.array(words, dtype="<u4").tobytes()[:length]

    def write_registers(self, address: int, data: bytes) -> None:
        found = self._ip_at(address)
        if found is None:
            raise self._board_register(address, "writing")
        padded = bytes(data) + b"\0" * (-len(data) % 4)
        for i, value in enumerate(np.frombuffer(padded, dtype="<u4")):
            word = address + 4 * i
            name, offset = self._ip_at(word)
            if offset == AP_CTRL and int(value) & AP_START:
                raise BoardRequiredError(f"starting {name} (ap_start) needs the accelerator in a PYNQ board's "
                                         "FPGA; off the board use backend='model'")
            self.registers[word] = int(value)

    # -- buffers ---------------------------------------------------------------------------------
    def allocate(self, shape, dtype, **kwargs) -> HostBuffer:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape)) if np.ndim(shape) else int(shape)
        storage = np.zeros(max(count * dtype.itemsize, 1), dtype=np.uint8)
        buffer = HostBuffer(shape, dtype, buffer=storage, device=self, device_address=self._next_address,
                            bo=len(self.buffers), coherent=False)
        buffer._storage = storage  # keep the host memory alive as long as the buffer
        self._next_address += (storage.nbytes + 0xFFF) & ~0xFFF
        self.buffers.append(buffer)
        return buffer

    def flush(self, bo, offset, ptr, size) -> None:
        pass  # host memory is the device memory here: nothing to write back

    def invalidate(self, bo, offset, ptr, size) -> None:
        pass

    def register(self, ip: str, offset: int) -> int:
        """The last value written to `offset` of IP `ip` (for checks: what the driver programmed)."""
        return self.registers.get(self.ip_dict[ip]["phys_addr"] + offset, 0)
