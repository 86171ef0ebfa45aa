#!/usr/bin/env bash
# onebit image entrypoint: pick up a host-mounted Vivado/Vitis the way FINN does, set what finn-plus' own
# launcher sets (finn/interface/run_finn.py: prepare_finn), build finn-plus' XSI simulator bindings once
# where the running user can write, say in one line which part of the flow will run, then run the command
# (default: onebit --help).
#
#   FINN_XILINX_PATH     where the Xilinx tools are mounted (e.g. /opt/Xilinx), as in FINN
#   FINN_XILINX_VERSION  e.g. 2024.2 (finn-plus supports 2022.2 and 2024.2)
#   ONEBIT_CACHE         a writable folder kept across runs for the XSI build (default /build/.onebit-cache,
#                        on the build volume; mount another with -v ~/.cache/onebit:/cache -e ONEBIT_CACHE=/cache)
#   ONEBIT_SKIP_RTLSIM   1: build the bitstream without XSI (FIFOs at minimal depth, no rtlsim performance)
# Without the tools, onebit builds up to HW code generation and lists the skipped steps in skipped.txt.
set -euo pipefail

if [ -n "${FINN_XILINX_PATH:-}" ] && [ -n "${FINN_XILINX_VERSION:-}" ]; then
    ver="$FINN_XILINX_VERSION"
    # Install layouts (FINN's run-docker.sh, finn-plus interface_utils.set_synthesis_tools_paths): up to 2024.2
    # <path>/Vivado/<ver>, later <path>/<ver>/Vivado. Vitis HLS: before 2024.2 <path>/Vitis_HLS/<ver>; from
    # 2024.2 it is part of Vitis, <path>/Vitis/<ver> (later <path>/<ver>/Vitis).
    if [ "$(printf '%s\n' "$ver" 2024.2 | sort -V | tail -n1)" = "2024.2" ]; then
        vivado="$FINN_XILINX_PATH/Vivado/$ver"
        if [ "$ver" = "2024.2" ]; then
            hls_candidates=("$FINN_XILINX_PATH/Vitis/$ver" "$FINN_XILINX_PATH/Vitis_HLS/$ver")
        else
            hls_candidates=("$FINN_XILINX_PATH/Vitis_HLS/$ver" "$FINN_XILINX_PATH/Vitis/$ver")
        fi
    else
        vivado="$FINN_XILINX_PATH/$ver/Vivado"; hls_candidates=("$FINN_XILINX_PATH/$ver/Vitis")
    fi
    if [ -f "$vivado/settings64.sh" ]; then
        # shellcheck disable=SC1091
        set +u; source "$vivado/settings64.sh"; set -u
        export XILINX_VIVADO="$vivado"
        echo "onebit: using Vivado $ver from $vivado"
        hls=""
        for candidate in "${hls_candidates[@]}"; do
            if [ -f "$candidate/settings64.sh" ]; then hls="$candidate"; break; fi
        done
        if [ -n "$hls" ]; then
            # shellcheck disable=SC1091
            set +u; source "$hls/settings64.sh"; set -u
            echo "onebit: using Vitis HLS $ver from $hls"
        else
            echo "onebit: WARNING no Vitis HLS settings64.sh in ${hls_candidates[*]}: NO BITSTREAM WILL BE BUILT" >&2
        fi
        # finn-plus' launcher: the Xilinx simulation libraries for the in-process XSI kernel (ld.so reads
        # LD_LIBRARY_PATH once, at process start, so it is set here, before Python starts) and no per-user
        # Xilinx Tcl store.
        ld="/lib/x86_64-linux-gnu/:$XILINX_VIVADO/lib/lnx64.o"
        if [ -n "${XILINX_HLS:-}" ]; then ld="$ld:$XILINX_HLS/lnx64/tools/fpo_v7_1"; fi
        export LD_LIBRARY_PATH="$ld${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export XILINX_LOCAL_USER_DATA="${XILINX_LOCAL_USER_DATA:-no}"
        # XSI (xsi.so) is compiled against this Vivado, in a folder the running uid can write and that outlives
        # `docker run --rm` (the build volume by default); finn-plus rebuilds it only for another version.
        cache="${ONEBIT_CACHE:-/build/.onebit-cache}"
        if ! mkdir -p "$cache" 2>/dev/null || [ ! -w "$cache" ]; then
            echo "onebit: WARNING $cache is not writable; XSI is built in ${TMPDIR:-/tmp} and rebuilt on every run (mount a cache: -v ~/.cache/onebit:/cache -e ONEBIT_CACHE=/cache)" >&2
            cache="${TMPDIR:-/tmp}/onebit-cache"
        fi
        export FINN_XSI="$cache/finn_xsi-$ver"
        python -m hw.finn.env setup-xsi "$FINN_XSI" ||
            echo "onebit: WARNING building finn-plus' XSI bindings in $FINN_XSI failed: without XSI no bitstream is built unless ONEBIT_SKIP_RTLSIM=1 (docs/docker.md)" >&2
    elif [ "${FINN_XILINX_PATH}" != "/opt/Xilinx" ] || [ -d "$FINN_XILINX_PATH" ]; then
        echo "onebit: no Vivado at $vivado (FINN_XILINX_PATH=$FINN_XILINX_PATH, FINN_XILINX_VERSION=$ver); mount the Xilinx tools with -v /opt/Xilinx:/opt/Xilinx:ro or unset FINN_XILINX_PATH" >&2
        exit 2
    else
        echo "onebit: no Xilinx tools mounted (-v /opt/Xilinx:/opt/Xilinx:ro)" >&2
    fi
fi

# One line: the full flow, or loudly that no bitstream will be built and why (hw/finn/env.py: tool_status).
python -m hw.finn.env status || echo "onebit: WARNING could not probe the FINN tools" >&2

if [ "$#" -eq 0 ]; then
    set -- onebit --help
fi
exec "$@"
