// Population count of N bits. Leaves are 3-bit full adders
// written as logic (not `+`), so synthesis packs them, together with the XNORs or compares that
// feed them, into LUT6s; the 2-bit partial counts are then summed by a balanced adder tree with
// STAGES register ranks spread over SPAN levels (onebit_addtree: the count holds (clog2(leaves)*STAGES)/SPAN
// of them, all STAGES by default; latency that many cycles of `en`, 0 = combinational).
module onebit_popcount #(
    parameter int N      = 8,
    parameter int STAGES = 0,
    parameter int SPAN   = $clog2((N + 2) / 3)
) (
    input  logic                     clk,
    input  logic                     en,
    input  logic [N-1:0]             bits,
    output logic [$clog2(N+1)-1:0]   count
);
    if (N < 1) begin : g_bad_n
        $error("onebit_popcount: N (%0d) must be at least 1", N);
    end

    localparam int LEAVES = (N + 2) / 3;
    logic [3*LEAVES-1:0] padded;
    logic [2*LEAVES-1:0] partial;
    logic [2+$clog2(LEAVES)-1:0] total;

    assign padded = {{(3*LEAVES-N){1'b0}}, bits};

    for (genvar i = 0; i < LEAVES; i++) begin : g_leaf
        logic a, b, c;
        assign {a, b, c} = padded[3*i +: 3];
        assign partial[2*i]     = a ^ b ^ c;                      // sum bit
        assign partial[2*i + 1] = (a & b) | (a & c) | (b & c);    // carry bit
    end

    onebit_addtree #(.N(LEAVES), .IW(2), .SIGNED(0), .STAGES(STAGES), .SPAN(SPAN)) u_tree (
        .clk(clk), .en(en), .terms(partial), .sum(total));
    // total <= N always, so the top bits dropped here are zero.
    assign count = total[$clog2(N+1)-1:0];
endmodule
