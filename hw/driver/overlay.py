"""The board backend: a thin `pynq.Overlay` subclass in finn-examples' style (IODMA registers, PYNQ buffers).

Imported only when `backend="board"` is chosen, so the rest of the driver works where pynq is absent.
The register protocol (0x10/0x14 buffer address, 0x1C repetitions, 0x00 start, bit 1 done, bit 2 idle)
is that of FINN's IODMA as driven by finn-examples' and finn-plus-driver's `FINNDMAOverlay`.
"""
from __future__ import annotations

import numpy as np
from pynq import Overlay, allocate

from .io_spec import IOSpec


class OnebitOverlay(Overlay):
    """Bitfile + the input/output IODMA of a FINN accelerator; moves packed bytes, nothing else."""

    def __init__(self, bitfile: str, spec: IOSpec, batch_size: int, download: bool = True, device=None) -> None:
        super().__init__(bitfile, download=download, device=device)
        self.spec = spec
        self.idma = getattr(self, spec.idma_name)
        self.odma = getattr(self, spec.odma_name)
        if spec.platform == "zynq-iodma" and download:
            # FCLK0 is the PS clock the shell's clocking wizard expects at its input (io.json fclk_mhz, 100 in
            # finn-plus' Zynq shell), not the accelerator clock (accel_clk_mhz) the wizard makes from it;
            # with download=False the running bitstream keeps the clock it was loaded with.
            from pynq.ps import Clocks
            Clocks.fclk0_mhz = spec.fclk_mhz
        self.ibuf = self.obuf = None
        self.batch_size = batch_size

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        # Hardware batch is one image; the driver batch is how many the DMA moves per start.
        self._batch_size = int(value)
        # On the overlay's device (pynq's default is the active device, which may be another one).
        self.ibuf = allocate(shape=(self._batch_size,) + self.spec.ishape_packed[1:], dtype=np.uint8,
                             target=self.device, cacheable=True)
        self.obuf = allocate(shape=(self._batch_size,) + self.spec.oshape_packed[1:], dtype=np.uint8,
                             target=self.device, cacheable=True)

    def execute_on_buffers(self, n: int) -> None:
        if self.odma.read(0x00) & 0x4 == 0:
            raise RuntimeError("output DMA is not idle; reload the overlay")
        self.odma.write(0x10, self.obuf.device_address & 0xFFFFFFFF)
        self.odma.write(0x14, (self.obuf.device_address >> 32) & 0xFFFFFFFF)
        self.odma.write(0x1C, n)
        self.odma.write(0x00, 1)
        self.idma.write(0x10, self.ibuf.device_address & 0xFFFFFFFF)
        self.idma.write(0x14, (self.ibuf.device_address >> 32) & 0xFFFFFFFF)
        self.idma.write(0x1C, n)
        self.idma.write(0x00, 1)
        while self.odma.read(0x00) & 0x2 == 0:
            pass

    def transfer(self, packed: np.ndarray) -> np.ndarray:
        n = packed.shape[0]
        self.ibuf[:n] = packed
        self.ibuf.flush()
        self.execute_on_buffers(n)
        self.obuf.invalidate()
        return np.array(self.obuf[:n], copy=True)
