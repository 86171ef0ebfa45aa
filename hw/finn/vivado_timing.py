"""Timing closure of a Vivado build: WNS / TNS from the routed design's timing report.

finn-plus' step_synthesize_bitfile (Zynq flow) copies Vivado's `report_timing_summary` of the routed Zynq project
(`finn_zynq_link.runs/impl_1/top_wrapper_timing_summary_routed.rpt`) to `<build>/report/post_route_timing.rpt`
(finn/builder/build_dataflow_steps.py: copy_timing_report) and reads nothing from it: a bitstream that misses
timing would be packaged like one that meets it. onebit reads it here. A negative WNS (setup), a negative WHS
(hold) or a report that cannot be read marks the build failed: the pipeline then writes no deployment package
and exits non-zero, with the worst setup path's endpoints in the message.

The format read is Vivado's text report (2024.2): the "Design Timing Summary" table (WNS(ns) TNS(ns) TNS
Failing Endpoints ... WHS(ns) ...) and, under "Max Delay Paths", the first path's Slack / Source /
Destination lines (the worst setup path). tests/hw/data/ holds recorded reports (met and violated).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from onebit.errors import OnebitError

REPORT = Path("report") / "post_route_timing.rpt"   # under the build folder (finn-plus copy_timing_report)
_COLUMNS = ("WNS(ns)", "TNS(ns)", "TNS Failing Endpoints", "TNS Total Endpoints", "WHS(ns)", "THS(ns)",
            "THS Failing Endpoints", "THS Total Endpoints")


class TimingReportError(OnebitError):
    """The timing report is missing or not Vivado's report_timing_summary text."""


def _number(text: str) -> float:
    return math.inf if text.lower() == "inf" else float(text)


def parse_timing_summary(text: str, where: str = "timing report") -> dict[str, Any]:
    """{"wns_ns", "tns_ns", "tns_failing_endpoints", "whs_ns", "ths_ns", ..., "worst_setup_path"} from the text of
    Vivado's report_timing_summary; TimingReportError when the Design Timing Summary table is absent."""
    lines = text.splitlines()
    header = next((i for i, line in enumerate(lines) if "WNS(ns)" in line and "TNS(ns)" in line), None)
    if header is None or header + 2 >= len(lines):
        raise TimingReportError(f"{where}: no 'Design Timing Summary' table (WNS(ns) TNS(ns) ...): not a Vivado "
                                "report_timing_summary of a routed design")
    # the header's columns are separated by two or more spaces; the row below the dashes holds their values
    columns = re.split(r"\s{2,}", lines[header].strip())
    values = lines[header + 2].split()
    if len(values) != len(columns) or not all(re.fullmatch(r"-?(\d+(\.\d*)?|inf)", v) for v in values):
        raise TimingReportError(f"{where}: the Design Timing Summary row {lines[header + 2].strip()!r} does not match "
                                f"its {len(columns)} columns")
    table = dict(zip(columns, values))
    missing = [c for c in _COLUMNS if c not in table]
    if missing:
        raise TimingReportError(f"{where}: the Design Timing Summary has no column {missing[0]}")
    result: dict[str, Any] = {
        "wns_ns": _number(table["WNS(ns)"]), "tns_ns": _number(table["TNS(ns)"]),
        "tns_failing_endpoints": int(table["TNS Failing Endpoints"]),
        "tns_total_endpoints": int(table["TNS Total Endpoints"]),
        "whs_ns": _number(table["WHS(ns)"]), "ths_ns": _number(table["THS(ns)"]),
        "ths_failing_endpoints": int(table["THS Failing Endpoints"]),
    }
    clock = re.search(r"^(\S+)\s+\{[\d.\s]+\}\s+([\d.]+)\s+([\d.]+)\s*$", text, re.M)
    if clock:
        result["clock"] = {"name": clock.group(1), "period_ns": float(clock.group(2)), "mhz": float(clock.group(3))}
    result["worst_setup_path"] = _worst_path(text)
    return result


def _worst_path(text: str) -> dict[str, Any] | None:
    """The first path under 'Max Delay Paths' (Vivado lists the worst first): slack, source, destination."""
    start = text.find("Max Delay Paths")
    if start < 0:
        return None
    block = text[start:]
    slack = re.search(r"^Slack(?: \((\w+)\))?\s*:\s*(-?[\d.]+|inf)ns", block, re.M)
    source = re.search(r"^\s*Source:\s+(\S+)", block, re.M)
    destination = re.search(r"^\s*Destination:\s+(\S+)", block, re.M)
    if not (slack and source and destination):
        return None
    path: dict[str, Any] = {"slack_ns": _number(slack.group(2)), "status": slack.group(1) or "",
                            "source": source.group(1), "destination": destination.group(1)}
    for key, pattern in (("data_path_delay_ns", r"^\s*Data Path Delay:\s+([\d.]+)ns"),
                         ("logic_levels", r"^\s*Logic Levels:\s+(\d+)")):
        found = re.search(pattern, block, re.M)
        if found:
            path[key] = float(found.group(1)) if key.endswith("_ns") else int(found.group(1))
    return path


def timing_verdict(build_dir: str | Path, clock_mhz: float | None = None) -> dict[str, Any]:
    """The build's timing verdict: {"status": passed | failed, "message", "report", ...parse_timing_summary}.
    failed: WNS or WHS below zero, or the report missing or unreadable (the bitstream's timing is unknown)."""
    path = Path(build_dir) / REPORT
    at = f" at {clock_mhz:g} MHz" if clock_mhz else ""
    if not path.is_file():
        return {"status": "failed", "report": str(path),
                "message": f"timing unknown: {path} is missing (finn-plus copies Vivado's routed timing summary "
                           "there in step_synthesize_bitfile); the bitstream is not packaged"}
    try:
        summary = parse_timing_summary(path.read_text(errors="replace"), str(path))
    except TimingReportError as error:
        return {"status": "failed", "report": str(path), "message": f"timing unknown: {error}; the bitstream is not "
                                                                    "packaged"}
    verdict: dict[str, Any] = {"report": str(path), **summary}
    worst = summary["worst_setup_path"]
    if summary["wns_ns"] < 0:
        ends = (f"; worst path from {worst['source']} to {worst['destination']} (slack {worst['slack_ns']:.3f} ns)"
                if worst else "; worst path not listed in the report")
        verdict.update(status="failed", message=(
            f"timing not met{at}: WNS {summary['wns_ns']:.3f} ns, TNS {summary['tns_ns']:.3f} ns over "
            f"{summary['tns_failing_endpoints']} failing endpoints{ends}; the bitstream is not packaged (lower the "
            f"clock or fold for a shorter path) - {path}"))
    elif summary["whs_ns"] < 0:
        verdict.update(status="failed", message=(
            f"hold timing not met{at}: WHS {summary['whs_ns']:.3f} ns, THS {summary['ths_ns']:.3f} ns over "
            f"{summary['ths_failing_endpoints']} failing endpoints; the bitstream is not packaged - {path}"))
    else:
        verdict.update(status="passed", message=f"timing met{at}: WNS {summary['wns_ns']:.3f} ns, WHS "
                                                f"{summary['whs_ns']:.3f} ns ({path})")
    return verdict


def bitstream_built(steps_run: list[str]) -> bool:
    """Whether this build ran Vivado's implementation (so a timing report must exist)."""
    return "step_synthesize_bitfile" in steps_run
