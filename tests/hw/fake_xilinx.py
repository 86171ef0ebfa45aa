"""A FAKE Xilinx 2024.2 install tree for onebit's contract tests. It builds nothing.

Laid out like a real install (`<root>/Vivado/2024.2`, `<root>/Vitis/2024.2` with settings64.sh and the
executables `vivado`, `vitis_hls`, `vitis-run` in bin/), so that docker/entrypoint.sh and onebit's tool
detection find it the way they find a real one. Each executable runs the Tcl script FINN generated under
Debian's `tclsh`, with every Vivado / Vitis HLS command defined as a *recorder*: the command and its
arguments go to a JSON-lines log, together with every `$::env(...)` read, every sourced or opened file and
every file a command is told to add. A read of an unset environment variable fails exactly as in Vivado
("no such variable"); a file argument that does not exist is recorded as missing (the test asserts none).

Where FINN's Python expects a tool's output file next, the recorder of the command that makes it in the real
tool writes a placeholder marked FAKE: `export_design` the HLS IP folder, `ipx::save_core` component.xml,
`make_wrapper` the HDL wrapper, `launch_runs ... impl_1` the bitfile / hwh and a timing report (a recorded
report in Vivado's format from tests/hw/data, met unless ONEBIT_FAKE_XILINX_TIMING names another),
`report_utilization -file` an empty XML report. No placeholder contains hardware: the bitfile is a text file
saying so. Only for tests: nothing in onebit's product code knows this tree.
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

VERSION = "2024.2"
TIMING_REPORTS = Path(__file__).resolve().parent / "data"   # Vivado report_timing_summary texts: met, violated
FAKE_MARK = "FAKE: written by onebit's test fake of the Xilinx tools (tests/hw/fake_xilinx.py), not by Vivado"

# The Tcl prelude: recorders for every command Tcl does not define itself (`unknown`), with output-producing
# recorders for the commands whose results FINN's Python reads afterwards.
RECORDER_TCL = r'''
namespace eval ::fake {
    variable tool [lindex $::argv 0]
    variable log $::env(ONEBIT_FAKE_XILINX_LOG)
    variable mark {%(mark)s}
    variable proj_name ""
    variable proj_dir ""
    variable hls_top ""
    variable core_root ""
    variable added [list]
    variable timing_report $::env(ONEBIT_FAKE_XILINX_TIMING)
}
proc ::fake::json {s} {
    return "\"[string map [list \\ \\\\ \" \\\" \n \\n \r \\r \t \\t] $s]\""
}
proc ::fake::record {kind name {items {}}} {
    set parts [list]
    foreach item $items { lappend parts [::fake::json $item] }
    set fh [::fake::real_open $::fake::log a]
    puts $fh "\{\"tool\": [::fake::json $::fake::tool], \"kind\": [::fake::json $kind], \"name\": [::fake::json $name], \"args\": \[[join $parts {, }]\], \"cwd\": [::fake::json [pwd]]\}"
    close $fh
}
proc ::fake::write {path text} {
    file mkdir [file dirname $path]
    set fh [::fake::real_open $path w]
    puts $fh $text
    close $fh
}
proc ::fake::check_file {cmd path} {
    if {$path eq "" || [string index $path 0] eq "-"} { return }
    if {![file exists $path]} { ::fake::record missing $cmd [list $path] }
}
proc ::fake::option {args name {default ""}} {
    set i [lsearch -exact $args $name]
    if {$i < 0} { return $default }
    return [lindex $args [expr {$i + 1}]]
}
proc ::fake::env_read {name1 name2 op} {
    if {$name2 ne ""} { ::fake::record env $name2 }
}
rename source ::fake::real_source
proc source {args} {
    set path [lindex $args end]
    ::fake::record source $path
    ::fake::check_file source $path
    uplevel 1 [list ::fake::real_source {*}$args]
}
rename open ::fake::real_open
proc open {path {mode r} args} {
    if {[string match r* $mode] || $mode eq "RDONLY"} { ::fake::record read $path; ::fake::check_file open $path }
    return [::fake::real_open $path $mode {*}$args]
}
# Commands that name input files: every one must exist when the tool is called.
proc ::fake::file_args {cmd args} {
    set skip 0
    foreach a $args {
        if {$skip} { set skip 0; continue }
        if {$a in {-fileset -of_objects -of -cflags -csimflags -filter -name -objects -value -copy_to}} { set skip 1; continue }
        if {[string index $a 0] eq "-"} { continue }
        foreach f $a { ::fake::check_file $cmd $f }
    }
}
proc unknown {cmd args} {
    ::fake::record cmd $cmd $args
    switch -glob -- $cmd {
        add_files - read_verilog - read_vhdl - read_xdc - import_files {
            ::fake::file_args $cmd {*}$args
            foreach a $args {
                if {[string index $a 0] ne "-"} { foreach f $a { lappend ::fake::added [file normalize $f] } }
            }
            set cflags [::fake::option $args -cflags]
            foreach flag $cflags {
                if {[string match -I* $flag]} { ::fake::check_file "$cmd -cflags" [string range $flag 2 end] }
            }
        }
        open_project {
            set ::fake::proj_name [lindex $args end]
            file mkdir $::fake::proj_name
        }
        set_top { set ::fake::hls_top [lindex $args 0] }
        csynth_design {
            ::fake::write "$::fake::proj_name/sol1/syn/report/${::fake::hls_top}_csynth.xml" \
                "<!-- $::fake::mark --><profile><AreaEstimates><Resources><BRAM_18K>0</BRAM_18K><FF>0</FF><LUT>0</LUT><DSP>0</DSP><URAM>0</URAM></Resources></AreaEstimates></profile>"
        }
        export_design {
            ::fake::write "$::fake::proj_name/sol1/impl/ip/component.xml" "<!-- $::fake::mark -->"
            ::fake::write "$::fake::proj_name/sol1/impl/verilog/${::fake::hls_top}.v" "// $::fake::mark"
        }
        create_project {
            set ::fake::proj_name [lindex $args 0]
            set ::fake::proj_dir [file normalize [lindex $args 1]]
            file mkdir $::fake::proj_dir
        }
        create_bd_design {
            set name [lindex $args 0]
            ::fake::write "$::fake::proj_dir/$::fake::proj_name.srcs/sources_1/bd/$name/$name.bd" "// $::fake::mark"
        }
        get_files {
            # a block design by name, or a source file the project holds (added by add_files & co. before)
            set found [list]
            foreach a $args {
                if {[string match *.bd $a]} {
                    lappend found $a
                } elseif {[string match */* $a] && [lsearch -exact $::fake::added [file normalize $a]] >= 0} {
                    lappend found $a
                }
            }
            return $found
        }
        make_wrapper {
            foreach bd [::fake::option $args -files] {
                if {[file pathtype $bd] ne "absolute"} {
                    set bd "$::fake::proj_dir/$::fake::proj_name.srcs/sources_1/bd/[file rootname $bd]/$bd"
                }
                set name [file rootname [file tail $bd]]
                ::fake::write "[file dirname $bd]/hdl/${name}_wrapper.v" "// $::fake::mark"
                ::fake::write "$::fake::proj_dir/$::fake::proj_name.gen/sources_1/bd/$name/hdl/${name}_wrapper.v" "// $::fake::mark"
            }
        }
        ipx::package_project {
            set ::fake::core_root [::fake::option $args -root_dir]
            file mkdir $::fake::core_root
        }
        ipx::save_core {
            ::fake::write "$::fake::core_root/component.xml" "<!-- $::fake::mark -->"
        }
        launch_runs {
            if {[lsearch -exact $args impl_1] >= 0} {
                set runs "$::fake::proj_dir/$::fake::proj_name.runs/impl_1"
                ::fake::write "$runs/top_wrapper.bit" $::fake::mark
                # a recorded report in Vivado's format (tests/hw/data), met unless a test names another
                file copy -force $::fake::timing_report "$runs/top_wrapper_timing_summary_routed.rpt"
                ::fake::write "$::fake::proj_dir/$::fake::proj_name.gen/sources_1/bd/top/hw_handoff/top.hwh" "<!-- $::fake::mark -->"
            }
        }
        report_utilization - report_timing_summary - report_power {
            set out [::fake::option $args -file]
            if {$out ne ""} { ::fake::write $out "<RptDoc><!-- $::fake::mark --></RptDoc>" }
        }
        write_checkpoint - write_verilog - write_xdc {
            set out [lindex $args end]
            if {$out ne "" && [string index $out 0] ne "-"} { ::fake::write $out "// $::fake::mark" }
        }
        version { return "v$::env(ONEBIT_FAKE_XILINX_VERSION) (64-bit) FAKE" }
        get_property {
            # Values the Tcl computes with: an AXI-lite address width (the shell's address map arithmetic).
            switch -- [lindex $args end-1] {
                CONFIG.ADDR_WIDTH { return 12 }
            }
        }
        set_property {
            if {[lindex $args 0] eq "ip_repo_paths"} {
                foreach dir [lindex $args 1] { ::fake::check_file "set_property ip_repo_paths" $dir }
            }
        }
    }
    return ""
}
trace add variable ::env read ::fake::env_read
'''

TOOL_SCRIPT = """#!/bin/bash
# FAKE {tool} for onebit's contract tests (tests/hw/fake_xilinx.py): runs the Tcl under tclsh with the
# Xilinx commands as recorders. It synthesizes nothing.
set -e
fake_root="$(cd "$(dirname "$0")/../../.." && pwd)"
export ONEBIT_FAKE_XILINX_LOG="${{ONEBIT_FAKE_XILINX_LOG:-$fake_root/fake_xilinx_calls.jsonl}}"
export ONEBIT_FAKE_XILINX_VERSION={version}
export ONEBIT_FAKE_XILINX_TIMING="${{ONEBIT_FAKE_XILINX_TIMING:-$fake_root/timing_report.rpt}}"
script=""
case "{tool}" in
    vivado)
        while [ "$#" -gt 0 ]; do
            if [ "$1" = "-source" ]; then script="$2"; shift; fi
            shift
        done ;;
    vitis_hls) script="${{1:-}}" ;;
    vitis-run)
        while [ "$#" -gt 0 ]; do
            if [ "$1" = "--tcl" ]; then script="$2"; shift; fi
            shift
        done ;;
esac
if [ -z "$script" ]; then
    echo "{tool} v{version} FAKE (onebit contract tests)"; exit 0
fi
printf '{{"tool": "{tool}", "kind": "invoke", "name": "%s", "args": [], "cwd": "%s"}}\\n' "$script" "$PWD" >> "$ONEBIT_FAKE_XILINX_LOG"
cat "$fake_root/recorder.tcl" > "$PWD/.fake_xilinx_run.tcl"
printf 'source {{%s}}\\n' "$script" >> "$PWD/.fake_xilinx_run.tcl"
exec tclsh "$PWD/.fake_xilinx_run.tcl" "{tool}"
"""


@dataclass
class FakeXilinx:
    root: Path  # what FINN_XILINX_PATH points to
    version: str
    log: Path

    @property
    def vivado(self) -> Path:
        return self.root / "Vivado" / self.version

    @property
    def vitis(self) -> Path:
        return self.root / "Vitis" / self.version

    def calls(self) -> list[dict]:
        if not self.log.is_file():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def environment(self) -> dict[str, str]:
        """What sourcing both settings64.sh files sets (the variables a user's shell would have)."""
        return {"XILINX_VIVADO": str(self.vivado), "XILINX_VITIS": str(self.vitis), "XILINX_HLS": str(self.vitis),
                "PATH": f"{self.vivado}/bin:{self.vitis}/bin:{os.environ.get('PATH', '')}",
                "ONEBIT_FAKE_XILINX_LOG": str(self.log)}


def _executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def make_fake_xilinx(root: Path, version: str = VERSION) -> FakeXilinx:
    """Write the fake tree under `root` (root = FINN_XILINX_PATH); returns its description."""
    root = Path(root)
    (root / "FAKE_XILINX_TREE_FOR_TESTS.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "FAKE_XILINX_TREE_FOR_TESTS.txt").write_text(FAKE_MARK + "\n")
    (root / "recorder.tcl").write_text(RECORDER_TCL % {"mark": FAKE_MARK})
    # what `launch_runs impl_1` leaves as the routed timing summary (ONEBIT_FAKE_XILINX_TIMING names another)
    (root / "timing_report.rpt").write_text((TIMING_REPORTS / "timing_summary_met.rpt").read_text())
    fake = FakeXilinx(root, version, root / "fake_xilinx_calls.jsonl")
    vivado, vitis = fake.vivado, fake.vitis
    (vivado / "lib" / "lnx64.o").mkdir(parents=True, exist_ok=True)
    # Where XSI's headers are in a real install; empty here, so XSI cannot be built (it is not faked).
    (vivado / "data" / "xsim" / "include").mkdir(parents=True, exist_ok=True)
    (vitis / "lnx64" / "tools" / "fpo_v7_1").mkdir(parents=True, exist_ok=True)
    (vivado / "settings64.sh").write_text(
        f"# FAKE Vivado settings64.sh (onebit contract tests)\nexport XILINX_VIVADO={vivado}\n"
        f"export PATH={vivado}/bin:$PATH\n")
    (vitis / "settings64.sh").write_text(
        f"# FAKE Vitis settings64.sh (onebit contract tests): from 2024.2 Vitis HLS lives here\n"
        f"export XILINX_VITIS={vitis}\nexport XILINX_HLS={vitis}\nexport PATH={vitis}/bin:$PATH\n")
    _executable(vivado / "bin" / "vivado", TOOL_SCRIPT.format(tool="vivado", version=version))
    for tool in ("vitis_hls", "vitis-run"):
        _executable(vitis / "bin" / tool, TOOL_SCRIPT.format(tool=tool, version=version))
    return fake
