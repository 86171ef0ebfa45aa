// Balanced adder tree: the sum of N terms of IW bits (two's complement when SIGNED), exact in
// IW + clog2(N) bits. Recursive, so its depth is clog2(N) adders, each only as wide as it must be.
//
// Pipelined (`en` advances every register rank at once): STAGES ranks spread evenly over SPAN adder
// levels, of which this tree holds the first TOP = clog2(N) (SPAN > TOP: the user adds more levels
// after the tree, e.g. onebit_dot's final add, and registers what falls after them itself). After
// level h (counted from the leaves) come (h*STAGES)/SPAN - ((h-1)*STAGES)/SPAN ranks, so the tree
// holds RANKS_IN = (TOP*STAGES)/SPAN of them (all STAGES when SPAN = TOP, the last on the output);
// every path from a term to the sum crosses the same ranks (a term that skips a level, N not a
// power of two, passes through them too). STAGES > SPAN puts the surplus ranks on the output.
// Latency: RANKS_IN cycles of `en`.
module onebit_addtree #(
    parameter int N      = 2,
    parameter int IW     = 8,
    parameter bit SIGNED = 0,
    parameter int STAGES = 0,
    parameter int SPAN   = $clog2(N),  // levels the STAGES ranks are spread over (>= TOP)
    parameter int TOP    = $clog2(N),  // levels of the whole tree (set by the recursion)
    parameter int HEIGHT = $clog2(N)   // levels of this subtree, >= clog2(N) (set by the recursion)
) (
    input  logic                     clk,
    input  logic                     en,
    input  logic [N*IW-1:0]          terms,
    output logic [IW+$clog2(N)-1:0]  sum
);
    if (N < 1 || IW < 1) begin : g_bad_shape
        $error("onebit_addtree: N (%0d) and IW (%0d) must be at least 1", N, IW);
    end
    if (STAGES < 0) begin : g_bad_stages
        $error("onebit_addtree: STAGES (%0d) must be at least 0", STAGES);
    end
    if (SPAN < TOP) begin : g_bad_span
        $error("onebit_addtree: SPAN (%0d) must be at least the tree's %0d levels", SPAN, TOP);
    end
    if (HEIGHT < $clog2(N) || TOP < HEIGHT) begin : g_bad_height
        $error("onebit_addtree: HEIGHT (%0d) must hold N (%0d) terms and be at most TOP (%0d)", HEIGHT, N, TOP);
    end

    localparam int OW = IW + $clog2(N);
    // register ranks after this subtree's top level
    localparam int RANKS = (SPAN == 0) ? STAGES :
                           (HEIGHT == 0) ? 0 :
                           (HEIGHT * STAGES) / SPAN - ((HEIGHT - 1) * STAGES) / SPAN;

    logic [OW-1:0] comb;
    if (HEIGHT == 0) begin : g_leaf
        assign comb = terms;
    end else if (N == 1) begin : g_pass
        // a lone term below a taller sibling: through the ranks of the levels it skips
        onebit_addtree #(.N(1), .IW(IW), .SIGNED(SIGNED), .STAGES(STAGES), .SPAN(SPAN), .TOP(TOP), .HEIGHT(HEIGHT - 1))
            u_down (.clk(clk), .en(en), .terms(terms), .sum(comb));
    end else begin : g_split
        localparam int NL = N / 2;
        localparam int NR = N - NL;
        logic [IW+$clog2(NL)-1:0] left;
        logic [IW+$clog2(NR)-1:0] right;
        onebit_addtree #(.N(NL), .IW(IW), .SIGNED(SIGNED), .STAGES(STAGES), .SPAN(SPAN), .TOP(TOP), .HEIGHT(HEIGHT - 1))
            u_left (.clk(clk), .en(en), .terms(terms[NL*IW-1:0]), .sum(left));
        onebit_addtree #(.N(NR), .IW(IW), .SIGNED(SIGNED), .STAGES(STAGES), .SPAN(SPAN), .TOP(TOP), .HEIGHT(HEIGHT - 1))
            u_right (.clk(clk), .en(en), .terms(terms[N*IW-1:NL*IW]), .sum(right));
        if (SIGNED) begin : g_signed
            assign comb = $signed(left) + $signed(right);
        end else begin : g_unsigned
            assign comb = left + right;
        end
    end

    // RANKS registers on the output
    if (RANKS == 0) begin : g_comb
        assign sum = comb;
    end else begin : g_ranks
        (* srl_style = "srl_reg" *) logic [RANKS*OW-1:0] pipe;   // rank r at [r*OW +: OW], packed so synthesis sees plain flip-flops
        always_ff @(posedge clk) begin
            if (en) begin
                pipe[OW-1:0] <= comb;
                for (int r = 1; r < RANKS; r++) pipe[r*OW +: OW] <= pipe[(r-1)*OW +: OW];
            end
        end
        assign sum = pipe[(RANKS-1)*OW +: OW];
    end
endmodule
