// Balanced adder tree: the sum of N terms of IW bits (two's complement when SIGNED), exact in
// IW + clog2(N) bits. Recursive, so its depth is clog2(N) adders, each only as wide as it must be.
module onebit_addtree #(
    parameter int N      = 2,
    parameter int IW     = 8,
    parameter bit SIGNED = 0
) (
    input  logic [N*IW-1:0]          terms,
    output logic [IW+$clog2(N)-1:0]  sum
);
    if (N < 1 || IW < 1) begin : g_bad_shape
        $error("onebit_addtree: N (%0d) and IW (%0d) must be at least 1", N, IW);
    end

    if (N == 1) begin : g_leaf
        assign sum = terms;
    end else begin : g_split
        localparam int NL = N / 2;
        localparam int NR = N - NL;
        logic [IW+$clog2(NL)-1:0] left;
        logic [IW+$clog2(NR)-1:0] right;
        onebit_addtree #(.N(NL), .IW(IW), .SIGNED(SIGNED)) u_left (.terms(terms[NL*IW-1:0]), .sum(left));
        onebit_addtree #(.N(NR), .IW(IW), .SIGNED(SIGNED)) u_right (.terms(terms[N*IW-1:NL*IW]), .sum(right));
        if (SIGNED) begin : g_signed
            assign sum = $signed(left) + $signed(right);
        end else begin : g_unsigned
            assign sum = left + right;
        end
    end
endmodule
