// Population count of N bits. Leaves are 3-bit full adders
// written as logic (not `+`), so synthesis packs them, together with the XNORs or compares that
// feed them, into LUT6s; the 2-bit partial counts are then summed by a balanced adder tree with
// STAGES register ranks spread over SPAN levels (onebit_addtree: the count holds (clog2(leaves)*STAGES)/SPAN
// of them, all STAGES by default). LEAF_RANKS more register ranks sit on the leaves' partial counts,
// before the tree, so the full adders (with the XNORs that feed them) are a pipeline segment of their own.
// Latency: LEAF_RANKS + the tree's ranks cycles of `en` (0 = combinational).
module onebit_popcount #(
    parameter int N          = 8,
    parameter int STAGES     = 0,
    parameter int SPAN       = $clog2((N + 2) / 3),
    parameter int LEAF_RANKS = 0
) (
    input  logic                     clk,
    input  logic                     en,
    input  logic [N-1:0]             bits,
    output logic [$clog2(N+1)-1:0]   count
);
    if (N < 1) begin : g_bad_n
        $error("onebit_popcount: N (%0d) must be at least 1", N);
    end
    if (LEAF_RANKS < 0) begin : g_bad_leaf_ranks
        $error("onebit_popcount: LEAF_RANKS (%0d) must be at least 0", LEAF_RANKS);
    end

    localparam int LEAVES = (N + 2) / 3;
    logic [3*LEAVES-1:0] padded;
    logic [2*LEAVES-1:0] partial, leaf_out;
    logic [2+$clog2(LEAVES)-1:0] total;

    assign padded = {{(3*LEAVES-N){1'b0}}, bits};

    for (genvar i = 0; i < LEAVES; i++) begin : g_leaf
        logic a, b, c;
        assign {a, b, c} = padded[3*i +: 3];
        assign partial[2*i]     = a ^ b ^ c;                      // sum bit
        assign partial[2*i + 1] = (a & b) | (a & c) | (b & c);    // carry bit
    end

    if (LEAF_RANKS > 0) begin : g_leaf_ranks
        (* srl_style = "srl_reg" *) logic [LEAF_RANKS*2*LEAVES-1:0] pipe;
        always_ff @(posedge clk) begin
            if (en) begin
                pipe[2*LEAVES-1:0] <= partial;
                for (int r = 1; r < LEAF_RANKS; r++) pipe[r*2*LEAVES +: 2*LEAVES] <= pipe[(r-1)*2*LEAVES +: 2*LEAVES];
            end
        end
        assign leaf_out = pipe[(LEAF_RANKS-1)*2*LEAVES +: 2*LEAVES];
    end else begin : g_leaf_comb
        assign leaf_out = partial;
    end

    onebit_addtree #(.N(LEAVES), .IW(2), .SIGNED(0), .STAGES(STAGES), .SPAN(SPAN)) u_tree (
        .clk(clk), .en(en), .terms(leaf_out), .sum(total));
    // total <= N always, so the top bits dropped here are zero.
    assign count = total[$clog2(N+1)-1:0];
endmodule
