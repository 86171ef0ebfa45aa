"""onebit.errors.first_line: the one way every stage turns an error into the line a report or a run record shows."""
from __future__ import annotations

from onebit.errors import first_line


def test_first_line_of_an_exception_is_its_type_and_first_non_empty_line():
    assert first_line(RuntimeError("\n  the design exploded  \nsecond line")) == "RuntimeError: the design exploded"
    assert first_line(KeyError("missing")) == "KeyError: 'missing'"


def test_an_exception_without_a_message_is_its_type_alone():
    assert first_line(AssertionError()) == "AssertionError"
    assert first_line(ValueError("\n \n")) == "ValueError"


def test_a_text_gives_its_first_non_empty_line_and_everything_is_capped_at_300_characters():
    assert first_line("\n\n  onebit: broken\nmore") == "onebit: broken"
    assert first_line("") == ""
    assert first_line("x" * 1000) == "x" * 300
    assert first_line(OSError("y" * 1000)) == ("OSError: " + "y" * 1000)[:300]


def test_the_verdict_and_the_ground_share_one_definition():
    from hw.check import verdict

    assert verdict.first_line is first_line
