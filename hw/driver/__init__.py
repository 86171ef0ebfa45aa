"""onebit's board-side driver: copied into every build as `driver/` and onto the board.

Depends on numpy (1.x on PYNQ images) and, for the board backend only, pynq; nothing else of onebit.
    from driver import Accelerator                          # on the board, from the deploy folder
    acc = Accelerator("driver/io.json", backend="board")     # or backend="model", model=AcceleratorModel
    prediction = acc.predict(images_uint8_nchw)

Off the board, `simdevice.SimulatedDevice` (pass `device=`) runs the board backend's pynq code up to the point
where the FPGA is needed and stops there with a one-line error.
"""
from .accelerator import BACKENDS, Accelerator, Prediction
from .integrity import PackageIntegrityError, verify_package
from .io_spec import FORMAT, VERSION, BoardRequiredError, DriverError, IOSpec
from .packing import PackingError, pack, unpack

__all__ = ["Accelerator", "BACKENDS", "BoardRequiredError", "DriverError", "FORMAT", "IOSpec", "PackingError",
           "PackageIntegrityError", "Prediction", "VERSION", "pack", "unpack", "verify_package"]
