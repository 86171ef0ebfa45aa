# onebit build image: onebit + finn-plus with FINN's external dependencies fetched at image build time.
# Vivado/Vitis are NOT in the image: mount them from the host and select them like FINN does
# (FINN_XILINX_PATH, FINN_XILINX_VERSION); docker/entrypoint.sh sources them and builds XSI once.
# Exact `docker build` / `docker run` lines: docs/docker.md.
#
# Same base as the environment the test suite runs in (Debian 12 bookworm, CPython 3.11), and the same
# setup script as outside Docker (tools/setup_env.sh: CPU torch first, then the --no-deps lock).
FROM python:3.11.7-slim-bookworm

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# System packages FINN needs at run time: git and wget (FINN's dependency fetcher clones and downloads with them), a C++ toolchain and cmake
# (cppsim, the XSI bindings), zip/unzip/xz (board files, deployment zip), libgomp (onnxruntime/torch),
# and the Fashion-MNIST idx files onebit trains on by default.
# For the Vivado flow, as finn-plus' own image has them: Boost program_options (finn_xsi's CMakeLists.txt, which
# finn-plus' XSI FIFO sizing configures and builds), libtinfo5 (Vivado's and Vitis HLS' bundled tools link
# libtinfo.so.5), the en_US.UTF-8 locale (generated below; Vivado's Tcl and Vitis HLS expect a UTF-8 locale),
# the X client libraries Vivado loads even in batch mode (libxrender1, libxtst6, libxi6, libxext6, libsm6) and glib.
# onebit's own checks: verilator (whole-accelerator and per-node RTL simulation), yosys (resource counts and
# timing estimates of onebit's RTL) and tcl, installed here as root (tools/setup_env.sh runs as uid 1000 below
# and cannot). Versions come from Debian 12's archive (tests/test_dockerfile.py checks they are the packages the
# test suite runs with, and that finn_xsi's CMake configure succeeds with them).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates wget git g++ make cmake zip unzip xz-utils libgomp1 dataset-fashion-mnist \
       libboost-program-options-dev libtinfo5 locales libglib2.0-0 libsm6 libxext6 libxrender1 libxtst6 libxi6 \
       verilator yosys tcl \
    && localedef -i en_US -f UTF-8 en_US.UTF-8 \
    && rm -rf /var/lib/apt/lists/*
ENV LANG=en_US.UTF-8 \
    LC_ALL=en_US.UTF-8

# A non-root user (uid 1000, like FINN's containers running as the caller) and the build volume.
RUN useradd --create-home --uid 1000 --shell /bin/bash onebit \
    && mkdir -p /build /home/onebit/onebit \
    && chown onebit:onebit /build /home/onebit/onebit

USER 1000:1000
WORKDIR /home/onebit/onebit
# torch: tools/setup_env.sh installs torch==<version>+cpu from PyTorch's CPU wheel index named here (a plain
# `torch==<version>` from PyPI is the CUDA build with ~17 nvidia packages, several GB).
ENV FINN_DEPS=/home/onebit/finn_deps \
    ONEBIT_TORCH_INDEX=https://download.pytorch.org/whl/cpu \
    FINN_XILINX_PATH=/opt/Xilinx \
    FINN_XILINX_VERSION=2024.2 \
    PATH=/home/onebit/onebit/.venv/bin:$PATH

# The whole source before the setup: its editable install records the packages present at install time.
# Then finn-hlslib, board files, nlohmann-json, ...: what finn-plus fetches, with finn-plus' own updater.
COPY --chown=1000:1000 . .
RUN bash tools/setup_env.sh \
    && python docker/fetch_finn_deps.py

VOLUME ["/build"]
ENTRYPOINT ["/home/onebit/onebit/docker/entrypoint.sh"]
CMD ["onebit", "--help"]
