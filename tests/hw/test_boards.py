"""Board presets: every supported board resolves, its part is the one finn-plus knows, bad names fail clearly."""
from __future__ import annotations

import pytest

from hw.boards import BOARDS, UnknownBoardError, get_board
from onebit.errors import OnebitError


def test_all_five_presets_match_finn_part_map():
    from finn.util.basic import pynq_part_map

    assert set(BOARDS) == {"Pynq-Z1", "Pynq-Z2", "Ultra96-V2", "ZCU104", "KV260"}
    for board in BOARDS.values():
        assert pynq_part_map[board.finn_board] == board.fpga_part
        assert board.shell_flow == "VIVADO_ZYNQ"
        assert board.lut > 0 and board.ff > board.lut and board.bram36 > 0 and board.dsp > 0
        assert board.budget()["BRAM_18K"] == 2 * board.bram36


def test_axi_port_width_is_the_one_finn_sizes_the_iodmas_to():
    from finn.util.basic import pynq_native_port_width

    for board in BOARDS.values():
        assert board.axi_port_bits == pynq_native_port_width[board.finn_board], board.name
    # the arithmetic: a 784-byte image needs 98 beats of 64 bits on Pynq-Z1, ~1.02 M images/s at 100 MHz
    assert get_board("Pynq-Z1").io_bound_fps(784) == pytest.approx(100e6 / 98)
    assert get_board("ZCU104").io_bound_fps(784) == pytest.approx(200e6 / 49)


def test_lookup_is_case_insensitive_and_knows_finn_spellings():
    assert get_board("pynq-z1").name == "Pynq-Z1"
    assert get_board("KV260_SOM").name == "KV260"
    assert get_board("ultra96").name == "Ultra96-V2"
    assert get_board("Pynq-Z1").clock_mhz == pytest.approx(100.0)


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(UnknownBoardError) as info:
        get_board("Arty-A7")
    message = str(info.value)
    assert isinstance(info.value, OnebitError)
    assert "Arty-A7" in message and "Pynq-Z1" in message and "KV260" in message and "\n" not in message
