"""bench/rtl_accelerator.py's Markdown says what its data says: the methods table labels each training
method's row, and the note on MVAUs without a yosys count is derived from the results, not written by hand."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bench import rtl_accelerator as bench

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "rtl_accelerator.json"


@pytest.fixture()
def results() -> dict:
    data = json.loads(RESULTS.read_text())
    if "tfc" not in data or "error" in data["tfc"]:
        pytest.skip("bench/results/rtl_accelerator.json has no tfc case")
    return data


def test_note_names_exactly_the_mvaus_without_a_yosys_count(results):
    full = {"tfc": copy.deepcopy(results["tfc"])}
    mvaus = [x["node"] for x in full["tfc"]["nodes"] if "MVAU" in x["op_type"]]
    full["tfc"]["mvau_luts"] = [m for m in full["tfc"]["mvau_luts"] if m["node"] in mvaus]
    full["tfc"]["mvau_luts"] += [{"node": n, "PE": 1, "SIMD": 1, "yosys_lut": 1, "yosys_ff": 1, "yosys_bram18": 0,
                                  "finn_hls_lut_estimate": 2, "ratio": 0.5}
                                 for n in mvaus if n not in {m["node"] for m in full["tfc"]["mvau_luts"]}]
    for m in full["tfc"]["mvau_luts"]:
        m["yosys_dot_instances"] = m["PE"]
    assert "Every MVAU of every case has a yosys count." in bench.markdown(full)
    assert "flat synthesis" not in bench.markdown(full)
    older = copy.deepcopy(full)  # counted before each PE's dot product became its own module
    older["tfc"]["mvau_luts"][-1]["yosys_dot_instances"] = None
    assert "The LUT rows of tfc come from an earlier flat synthesis" in bench.markdown(older)

    gap = copy.deepcopy(full)
    dropped = gap["tfc"]["mvau_luts"].pop(0)["node"]
    gap["tfc"]["mvau_synth_errors"] = {dropped: "yosys synthesis of onebit_mvau failed: -15"}
    text = bench.markdown(gap)
    assert "Every MVAU" not in text
    note = [line for line in text.splitlines() if line.startswith("- MVAUs without a yosys count")]
    assert len(note) == 1 and f"tfc {dropped} (PE" in note[0] and "failed: -15" in note[0]
    assert f"| tfc | {dropped} |" not in text  # and the LUT table leaves it out


def test_methods_table_labels_each_training_method(results):
    data = {"tfc": results["tfc"], "rbonn:tfc": copy.deepcopy(results["tfc"]), "irnet:tfc": {"error": "boom"}}
    text = bench.markdown(data)
    table = text.split("## One checkpoint of each training method: TFC-w1a1")[1].split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| STE (BNN-PYNQ)", "| IR-Net", "| RBONN"]
    assert "not run: boom" in rows[1]
    assert "--target-fps 10000" in table  # the build options of the case the methods share
    # method rows appear only in the methods table, not among the folding cases
    assert "| rbonn:tfc |" not in text.split("## One checkpoint")[0]


def test_notes_name_exactly_the_rows_measured_before_the_pipelining_and_the_short_trainings(results):
    current = {"tfc": copy.deepcopy(results["tfc"])}
    assert any(m.get("fmax_mhz") for m in current["tfc"]["mvau_luts"])  # measured on the pipelined MVAU
    current["tfc"]["training"] = {"estimator": "ste", "epochs": 1, "limit_train": None, "seed": 0}
    text = bench.markdown(current)
    assert "Every row of this file was measured with the pipelined MVAU." in text
    assert "Rows measured before it" not in text and "trained on part of the training set" not in text

    older = copy.deepcopy(current)
    older["tfc-old"] = copy.deepcopy(current["tfc"])  # a build whose report timed no MVAU: before the pipelining
    for m in older["tfc-old"]["mvau_luts"]:
        m.update(fmax_mhz=None, timing_error=None)
    older["tfc-old"]["training"]["limit_train"] = 5000
    text = bench.markdown(older)
    assert "Every row of this file" not in text
    assert "Rows measured before it, with the unpipelined MVAU (no Fmax in their build's report): tfc-old;" in text
    assert "--cases tfc-old` reruns them" in text
    assert "trained on part of the training set (mismatches, cycles and resources do not depend on it; the " \
           "accuracy does): tfc-old (5,000 images, 1 epoch(s))." in text
