// onebit's generic AXI-stream testbench for one Verilator-built FINN node (hw/check/rtl_nodes.py).
//
// One input stream in -> one output stream out. The per-node header harness_ports.h (written by
// rtl_nodes.py) names the Verilated top class and its ports. Beats are little-endian 32-bit words
// (IN_WORDS / OUT_WORDS per beat) in binary files. Every cycle the source withholds TVALID with
// probability p_stall (once raised it holds until accepted, as AXI-stream requires) and the sink lowers
// TREADY with probability p_backpressure. A run that stops making progress for `idle_limit` cycles is a
// deadlock: exit status 3 with a one-line message naming the counts reached.
//
// usage: sim IN_FILE OUT_FILE EXPECTED_OUT_BEATS SEED P_STALL P_BACKPRESSURE IDLE_LIMIT
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "verilated.h"
#include "harness_ports.h"  // TOP_CLASS, TOP_HEADER, IN_*, OUT_*, IN_WORDS, OUT_WORDS

#include TOP_HEADER

double sc_time_stamp() { return 0; }

// Ports narrower than 65 bits are plain integers in Verilator, wider ones VlWide<N> arrays of 32-bit words.
template <typename T>
static void put(T& port, const uint32_t* w, int words) {
    uint64_t v = w[0];
    if (words > 1) v |= static_cast<uint64_t>(w[1]) << 32;
    port = static_cast<T>(v);
}
template <std::size_t N>
static void put(VlWide<N>& port, const uint32_t* w, int words) {
    for (std::size_t i = 0; i < N; ++i) port[i] = static_cast<int>(i) < words ? w[i] : 0u;
}
template <typename T>
static void get(const T& port, uint32_t* w, int words) {
    uint64_t v = static_cast<uint64_t>(port);
    for (int i = 0; i < words; ++i) w[i] = i < 2 ? static_cast<uint32_t>(v >> (32 * i)) : 0u;
}
template <std::size_t N>
static void get(const VlWide<N>& port, uint32_t* w, int words) {
    for (int i = 0; i < words; ++i) w[i] = i < static_cast<int>(N) ? port[i] : 0u;
}

int main(int argc, char** argv) {
    if (argc != 8) {
        std::fprintf(stderr, "usage: %s IN OUT EXPECTED SEED P_STALL P_BACKPRESSURE IDLE_LIMIT\n", argv[0]);
        return 2;
    }
    const long expected = std::atol(argv[3]);
    std::mt19937_64 rng(std::strtoull(argv[4], nullptr, 10));
    const double p_stall = std::atof(argv[5]), p_back = std::atof(argv[6]);
    const long idle_limit = std::atol(argv[7]);
    std::uniform_real_distribution<double> coin(0.0, 1.0);

    std::FILE* fin = std::fopen(argv[1], "rb");
    if (!fin) { std::fprintf(stderr, "cannot read %s\n", argv[1]); return 2; }
    std::vector<uint32_t> in;
    uint32_t word;
    while (std::fread(&word, 4, 1, fin) == 1) in.push_back(word);
    std::fclose(fin);
    const long in_beats = static_cast<long>(in.size() / IN_WORDS);
    std::vector<uint32_t> out(static_cast<size_t>(expected) * OUT_WORDS + OUT_WORDS);

    VerilatedContext ctx;
    TOP_CLASS top(&ctx);
    top.ap_clk = 0;
    top.ap_rst_n = 0;
    top.IN_VALID = 0;
    top.OUT_READY = 0;
    for (int i = 0; i < 16; ++i) { top.ap_clk = !top.ap_clk; top.eval(); }
    top.ap_rst_n = 1;

    long sent = 0, received = 0, extra = 0, cycle = 0, idle = 0, drain = 0;
    bool valid = false;
    while (true) {
        if (!valid && sent < in_beats && coin(rng) >= p_stall) valid = true;
        top.IN_VALID = valid;
        if (valid) put(top.IN_DATA, &in[static_cast<size_t>(sent) * IN_WORDS], IN_WORDS);
        top.OUT_READY = received >= expected ? 1 : (coin(rng) >= p_back);
        top.ap_clk = 0;
        top.eval();
        bool progress = false;
        if (valid && top.IN_READY) { ++sent; valid = false; progress = true; }
        if (top.OUT_VALID && top.OUT_READY) {
            if (received < expected) get(top.OUT_DATA, &out[static_cast<size_t>(received) * OUT_WORDS], OUT_WORDS);
            else ++extra;
            ++received;
            progress = true;
        }
        top.ap_clk = 1;
        top.eval();
        ++cycle;
        idle = progress ? 0 : idle + 1;
        if (received >= expected && sent >= in_beats) {
            if (++drain > 256) break;  // watch a while for outputs beyond the expected count
        } else if (idle > idle_limit) {
            std::fprintf(stderr, "deadlock: no stream progress for %ld cycles at cycle %ld; %ld/%ld input beats "
                         "accepted, %ld/%ld output beats produced\n", idle, cycle, sent, in_beats, received, expected);
            return 3;
        }
    }
    std::FILE* fout = std::fopen(argv[2], "wb");
    if (!fout) { std::fprintf(stderr, "cannot write %s\n", argv[2]); return 2; }
    std::fwrite(out.data(), 4, static_cast<size_t>(expected) * OUT_WORDS, fout);
    std::fclose(fout);
    std::printf("{\"cycles\": %ld, \"in_beats\": %ld, \"out_beats\": %ld, \"extra_out_beats\": %ld}\n",
                cycle, sent, received < expected ? received : expected, extra);
    top.final();
    return 0;
}
