#!/usr/bin/env bash
# onebit image entrypoint: pick up a host-mounted Vivado/Vitis the way FINN's run-docker.sh does, build
# finn-plus' XSI simulator bindings once for it, then run the given command (default: onebit --help).
#
#   FINN_XILINX_PATH     where the Xilinx tools are mounted (e.g. /opt/Xilinx), as in FINN
#   FINN_XILINX_VERSION  e.g. 2024.2 (finn-plus supports 2022.2 and 2024.2)
# Without them (or without a Vivado there), onebit builds up to HW code generation and lists the
# skipped steps in the build folder's skipped.txt.
set -euo pipefail

if [ -n "${FINN_XILINX_PATH:-}" ] && [ -n "${FINN_XILINX_VERSION:-}" ]; then
    ver="$FINN_XILINX_VERSION"
    # FINN's layout rule (run-docker.sh, dev branch): up to 2024.2 <path>/Vivado/<ver>, later <path>/<ver>/Vivado
    if [ "$(printf '%s\n' "$ver" 2024.2 | sort -V | tail -n1)" = "2024.2" ]; then
        vivado="$FINN_XILINX_PATH/Vivado/$ver"; vitis_hls="$FINN_XILINX_PATH/Vitis_HLS/$ver"
    else
        vivado="$FINN_XILINX_PATH/$ver/Vivado"; vitis_hls="$FINN_XILINX_PATH/$ver/Vitis"
    fi
    if [ -f "$vivado/settings64.sh" ]; then
        # shellcheck disable=SC1091
        set +u; source "$vivado/settings64.sh"; set -u
        if [ -f "$vitis_hls/settings64.sh" ]; then
            # shellcheck disable=SC1091
            set +u; source "$vitis_hls/settings64.sh"; set -u
        fi
        export XILINX_VIVADO="$vivado"
        echo "onebit: using Vivado $ver from $vivado"
        # XSI (finn_xsi/xsi.so) is compiled against this Vivado; finn-plus rebuilds it only if missing
        # or built for another version, so this is a no-op after the first run.
        python -m finn.xsi.setup --quiet ||
            echo "onebit: WARNING building finn-plus' XSI bindings failed; RTL simulation steps will be skipped" >&2
    elif [ "${FINN_XILINX_PATH}" != "/opt/Xilinx" ] || [ -d "$FINN_XILINX_PATH" ]; then
        echo "onebit: no Vivado at $vivado (FINN_XILINX_PATH=$FINN_XILINX_PATH, FINN_XILINX_VERSION=$ver); mount the Xilinx tools with -v /opt/Xilinx:/opt/Xilinx:ro or unset FINN_XILINX_PATH" >&2
        exit 2
    else
        echo "onebit: no Xilinx tools mounted; building up to HW code generation (see skipped.txt)"
    fi
fi

if [ "$#" -eq 0 ]; then
    set -- onebit --help
fi
exec "$@"
