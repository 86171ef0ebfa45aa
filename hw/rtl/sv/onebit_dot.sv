// Dot product of one SIMD-wide slice for one PE, without multipliers.
//   XNOR = 1: x and w are binary {0,1} encoding {-1,+1}; result = popcount(XNOR(x, w))
//             (FINN's binaryXnorMode; the bipolar dot product is 2*result - SIMD).
//   XNOR = 0: x holds SIMD integers of IBITS bits (two's complement when ISIGNED), w holds SIMD
//             bipolar weights (bit 1 = +1, bit 0 = -1); result = sum(w ? x : -x), computed as
//             sum(w ? x : ~x) + popcount(~w) so that no lane needs its own negation adder.
module onebit_dot #(
    parameter int SIMD    = 8,
    parameter int IBITS   = 1,
    parameter bit ISIGNED = 0,
    parameter bit XNOR    = 1,
    parameter int DW      = XNOR ? $clog2(SIMD + 1) : IBITS + 1 + $clog2(SIMD)
) (
    input  logic [SIMD*IBITS-1:0] x,
    input  logic [SIMD-1:0]       w,
    output logic [DW-1:0]         dot   // unsigned count (XNOR) or two's complement sum
);
    if (SIMD < 1) begin : g_bad_simd
        $error("onebit_dot: SIMD (%0d) must be at least 1", SIMD);
    end
    if (XNOR && IBITS != 1) begin : g_bad_xnor
        $error("onebit_dot: XNOR mode needs 1-bit inputs, got IBITS = %0d", IBITS);
    end

    if (XNOR) begin : g_xnor
        logic [$clog2(SIMD+1)-1:0] count;
        onebit_popcount #(.N(SIMD)) u_pop (.bits(~(x ^ w)), .count(count));
        assign dot = DW'(count);
    end else begin : g_addsub
        localparam int TW = IBITS + 1;            // holds x and -x for signed and unsigned x
        logic [SIMD*TW-1:0] terms;
        logic [TW+$clog2(SIMD)-1:0] tree;
        logic [$clog2(SIMD+1)-1:0] negatives;
        for (genvar i = 0; i < SIMD; i++) begin : g_lane
            logic [TW-1:0] xe;
            assign xe = ISIGNED ? {x[i*IBITS+IBITS-1], x[i*IBITS +: IBITS]} : {1'b0, x[i*IBITS +: IBITS]};
            assign terms[i*TW +: TW] = w[i] ? xe : ~xe;   // ~xe = -xe - 1
        end
        onebit_addtree #(.N(SIMD), .IW(TW), .SIGNED(1)) u_tree (.terms(terms), .sum(tree));
        // negatives = SIMD - popcount(w): Verilator 5.006 miscounted popcount(~w) by one where w is a
        // lane of a weight word wider than 64 bits (PE 16 x SIMD 9: lane 7; tests/hw/rtl/test_rtl_mvau_lanes.py)
        logic [$clog2(SIMD+1)-1:0] positives;
        onebit_popcount #(.N(SIMD)) u_pos (.bits(w), .count(positives));
        assign negatives = ($clog2(SIMD+1))'(SIMD) - positives;
        // Exact modulo 2**DW, and the true sum fits DW bits, so the result is exact.
        assign dot = DW'($signed(tree)) + DW'(negatives);
    end
endmodule
