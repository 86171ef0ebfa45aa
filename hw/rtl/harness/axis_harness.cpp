// Generic AXI-stream test bench for one onebit RTL node, built by Verilator (--prefix Vtop) and run
// by hw/rtl/verilator.py: Python writes the input beats to a file, this program drives them into
// in0_V with optional random stalls, takes out0_V with optional random back-pressure, and writes
// the output beats and the cycle counts back. Python drives the simulation; this file only clocks it.
//
// Usage: axis_harness IN_FILE OUT_FILE N_IN N_OUT IN_WORDS OUT_WORDS OUT_PER_IMAGE
//                     IN_STALL_PERMILLE OUT_STALL_PERMILLE SEED MAX_CYCLES IDLE_LIMIT SINK_CAPACITY
// Beats are little-endian arrays of IN_WORDS / OUT_WORDS 32-bit words (word 0 = bits 31..0).
// Exit status: 0 done; 2 bad arguments or files; 3 deadlock (no transfer for IDLE_LIMIT cycles);
// 4 cycle limit; 5 more output beats than expected. The last stdout line is `STATS key=value ...`.
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "Vtop.h"
#include "verilated.h"

namespace {

template <typename T>
void put(T& port, const uint32_t* words, int n) {
    uint64_t value = words[0];
    if (n > 1 && sizeof(T) > 4) value |= static_cast<uint64_t>(words[1]) << 32;
    port = static_cast<T>(value);
}

template <std::size_t N>
void put(VlWide<N>& port, const uint32_t* words, int n) {
    for (std::size_t i = 0; i < N; ++i) port[i] = i < static_cast<std::size_t>(n) ? words[i] : 0;
}

template <typename T>
void get(const T& port, uint32_t* words, int n) {
    const uint64_t value = port;
    words[0] = static_cast<uint32_t>(value);
    if (n > 1) words[1] = static_cast<uint32_t>(value >> 32);
}

template <std::size_t N>
void get(const VlWide<N>& port, uint32_t* words, int n) {
    for (int i = 0; i < n; ++i) words[i] = static_cast<std::size_t>(i) < N ? port[i] : 0;
}

// xorshift64*: a fixed, portable stall pattern for a given seed.
struct Rng {
    uint64_t s;
    uint32_t permille() {
        s ^= s >> 12; s ^= s << 25; s ^= s >> 27;
        return static_cast<uint32_t>((s * 2685821657736338717ULL) >> 33) % 1000;
    }
};

long long arg(char** argv, int i) { return std::strtoll(argv[i], nullptr, 10); }

}  // namespace

int main(int argc, char** argv) {
    if (argc != 14) {
        std::fprintf(stderr, "usage: %s IN OUT N_IN N_OUT IN_WORDS OUT_WORDS OUT_PER_IMAGE IN_STALL OUT_STALL "
                             "SEED MAX_CYCLES IDLE_LIMIT SINK_CAPACITY\n", argv[0]);
        return 2;
    }
    const long long n_in = arg(argv, 3), n_out = arg(argv, 4);
    const int in_words = static_cast<int>(arg(argv, 5)), out_words = static_cast<int>(arg(argv, 6));
    const long long out_per_image = arg(argv, 7);
    const uint32_t in_stall = static_cast<uint32_t>(arg(argv, 8)), out_stall = static_cast<uint32_t>(arg(argv, 9));
    Rng rng{static_cast<uint64_t>(arg(argv, 10)) * 0x9E3779B97F4A7C15ULL + 1};
    const long long max_cycles = arg(argv, 11), idle_limit = arg(argv, 12), sink_capacity = arg(argv, 13);

    std::vector<uint32_t> input(static_cast<std::size_t>(n_in * in_words));
    FILE* f = std::fopen(argv[1], "rb");
    if (!f || std::fread(input.data(), 4, input.size(), f) != input.size()) {
        std::fprintf(stderr, "cannot read %lld input beats from %s\n", n_in, argv[1]);
        return 2;
    }
    std::fclose(f);
    std::vector<uint32_t> output(static_cast<std::size_t>(n_out * out_words));
    std::vector<long long> image_done;

    VerilatedContext context;
    Vtop top{&context};
    top.ap_clk = 0;
    top.ap_rst_n = 0;
    top.in0_V_TVALID = 0;
    top.out0_V_TREADY = 0;
    for (int i = 0; i < 4; ++i) {  // synchronous reset: a few edges with ap_rst_n low
        top.ap_clk = 1; top.eval();
        top.ap_clk = 0; top.eval();
    }
    top.ap_rst_n = 1;
    top.eval();

    long long cycle = 0, in_done = 0, out_done = 0, extra = 0, last_transfer = 0;
    long long first_in = -1, first_out = -1;
    bool presenting = false;      // AXI: once TVALID is raised it stays until the transfer
    const char* verdict = "done";
    int status = 0;
    long long drain = -1;         // cycles still watched for spurious output after the last beat
    uint32_t beat[4096];

    while (true) {
        if (!presenting && in_done < n_in && (in_stall == 0 || rng.permille() >= in_stall)) {
            presenting = true;
            put(top.in0_V_TDATA, &input[static_cast<std::size_t>(in_done * in_words)], in_words);
        }
        top.in0_V_TVALID = presenting;
        const bool sink_open = sink_capacity < 0 || out_done < sink_capacity;
        top.out0_V_TREADY = sink_open && (out_stall == 0 || rng.permille() >= out_stall);
        top.eval();

        const bool in_fire = presenting && top.in0_V_TREADY;
        const bool out_fire = top.out0_V_TVALID && top.out0_V_TREADY;
        if (out_fire) {
            if (out_done < n_out) {
                get(top.out0_V_TDATA, beat, out_words);
                for (int i = 0; i < out_words; ++i) output[static_cast<std::size_t>(out_done * out_words + i)] = beat[i];
                if (first_out < 0) first_out = cycle;
                ++out_done;
                if (out_per_image > 0 && out_done % out_per_image == 0) image_done.push_back(cycle);
            } else {
                ++extra;
            }
        }
        if (in_fire) {
            if (first_in < 0) first_in = cycle;
            ++in_done;
            presenting = false;
        }
        if (in_fire || out_fire) last_transfer = cycle;

        top.ap_clk = 1; top.eval();
        top.ap_clk = 0; top.eval();
        ++cycle;

        if (drain < 0 && out_done == n_out && in_done == n_in) drain = 64;
        if (drain >= 0 && drain-- == 0) break;
        if (cycle - last_transfer > idle_limit && drain < 0) {
            verdict = "deadlock"; status = 3; break;
        }
        if (cycle >= max_cycles) {
            verdict = "cycle_limit"; status = 4; break;
        }
    }
    if (status == 0 && extra > 0) { verdict = "extra_output"; status = 5; }

    FILE* o = std::fopen(argv[2], "wb");
    if (!o || std::fwrite(output.data(), 4, static_cast<std::size_t>(out_done * out_words), o) !=
                  static_cast<std::size_t>(out_done * out_words)) {
        std::fprintf(stderr, "cannot write %s\n", argv[2]);
        return 2;
    }
    std::fclose(o);
    std::printf("STATS verdict=%s cycles=%lld in=%lld out=%lld extra=%lld first_in=%lld first_out=%lld "
                "last_transfer=%lld image_done=", verdict, cycle, in_done, out_done, extra, first_in, first_out,
                last_transfer);
    for (std::size_t i = 0; i < image_done.size(); ++i) std::printf(i ? ",%lld" : "%lld", image_done[i]);
    std::printf("\n");
    top.final();
    return status;
}
