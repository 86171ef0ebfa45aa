// Dot product of one SIMD-wide slice for one PE, without multipliers.
//   XNOR = 1: x and w are binary {0,1} encoding {-1,+1}; result = popcount(XNOR(x, w))
//             (FINN's binaryXnorMode; the bipolar dot product is 2*result - SIMD).
//   XNOR = 0: x holds SIMD integers of IBITS bits (two's complement when ISIGNED), w holds SIMD
//             bipolar weights (bit 1 = +1, bit 0 = -1); result = sum(w ? x : -x), computed as
//             sum(w ? x : ~x) + popcount(~w) so that no lane needs its own negation adder.
// STAGES register ranks (0: combinational), advanced by `en`: the result of the x, w presented in
// one cycle of `en` comes out STAGES cycles of `en` later. The ranks are spread evenly over the logic
// levels, so what follows (the accumulator) starts from a register whenever STAGES > 0:
//   XNOR: the XNOR + full-adder leaves and the partial-count tree's levels (onebit_popcount):
//         STAGES / (TOP + 1) ranks after the leaves, the rest over the tree, the last on its output;
//   add/subtract: the lane tree's levels (onebit_addtree) and the one after it (+ popcount(~w)):
//         INNER ranks inside the tree, OUTER after that last level.
module onebit_dot #(
    parameter int SIMD    = 8,
    parameter int IBITS   = 1,
    parameter bit ISIGNED = 0,
    parameter bit XNOR    = 1,
    parameter int STAGES  = 0,
    parameter int DW      = XNOR ? $clog2(SIMD + 1) : IBITS + 1 + $clog2(SIMD)
) (
    input  logic                  clk,
    input  logic                  en,
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
    if (STAGES < 0) begin : g_bad_stages
        $error("onebit_dot: STAGES (%0d) must be at least 0", STAGES);
    end

    // levels of the tree: the lane tree's (add/subtract) or the popcount's partial-count tree (XNOR)
    localparam int TOP   = XNOR ? $clog2((SIMD + 2) / 3) : $clog2(SIMD);
    localparam int LEAF  = XNOR ? STAGES / (TOP + 1) : 0;             // XNOR: ranks after the leaves
    localparam int INNER = XNOR ? STAGES : (TOP * STAGES) / (TOP + 1);  // ranks inside the tree (XNOR: all)
    localparam int OUTER = STAGES - INNER;                              // ranks on the result

    logic [DW-1:0] total;
    if (OUTER > 0) begin : g_out_ranks
        (* srl_style = "srl_reg" *) logic [OUTER*DW-1:0] pipe;
        always_ff @(posedge clk) begin
            if (en) begin
                pipe[DW-1:0] <= total;
                for (int r = 1; r < OUTER; r++) pipe[r*DW +: DW] <= pipe[(r-1)*DW +: DW];
            end
        end
        assign dot = pipe[(OUTER-1)*DW +: DW];
    end else begin : g_comb
        assign dot = total;
    end

    if (XNOR) begin : g_xnor
        logic [$clog2(SIMD+1)-1:0] count;
        onebit_popcount #(.N(SIMD), .STAGES(STAGES - LEAF), .LEAF_RANKS(LEAF)) u_pop (
            .clk(clk), .en(en), .bits(~(x ^ w)), .count(count));
        assign total = DW'(count);
    end else begin : g_addsub
        localparam int TW = IBITS + 1;            // holds x and -x for signed and unsigned x
        logic [SIMD*TW-1:0] terms;
        logic [TW+$clog2(SIMD)-1:0] tree;
        for (genvar i = 0; i < SIMD; i++) begin : g_lane
            logic [TW-1:0] xe;
            assign xe = ISIGNED ? {x[i*IBITS+IBITS-1], x[i*IBITS +: IBITS]} : {1'b0, x[i*IBITS +: IBITS]};
            assign terms[i*TW +: TW] = w[i] ? xe : ~xe;   // ~xe = -xe - 1
        end
        onebit_addtree #(.N(SIMD), .IW(TW), .SIGNED(1), .STAGES(STAGES), .SPAN(TOP + 1)) u_tree (
            .clk(clk), .en(en), .terms(terms), .sum(tree));
        // popcount(~w) = SIMD - popcount(w): Verilator 5.006 miscounted popcount(~w) by one where w is a lane
        // of a weight word wider than 64 bits (PE 16 x SIMD 9: lane 7; tests/hw/rtl/test_rtl_mvau_lanes.py)
        logic [$clog2(SIMD+1)-1:0] positives;
        onebit_popcount #(.N(SIMD), .STAGES(INNER)) u_pos (
            .clk(clk), .en(en), .bits(w), .count(positives));
        // Exact modulo 2**DW, and the true sum fits DW bits, so the result is exact.
        assign total = DW'($signed(tree)) + DW'(SIMD) - DW'(positives);
    end
endmodule
