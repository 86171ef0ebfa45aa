// Multi-threshold activation of PE accumulators (FINN's ThresholdsActivation with less_equal):
//   out = ACT_VAL + #{k : acc >= thr[k]}, kept to OBITS bits (two's complement for signed outputs).
// NTHR = 0 means no activation: out = acc, sign- or zero-extended / truncated to OBITS (the raw
// popcount or sum of a score layer). Accumulators and thresholds are ACC_BITS wide, two's complement
// when ACC_SIGNED; lane p of every vector sits at bits [p*width +: width].
module onebit_threshold #(
    parameter int PE         = 1,
    parameter int NTHR       = 1,
    parameter int ACC_BITS   = 8,
    parameter bit ACC_SIGNED = 0,
    parameter int OBITS      = 1,
    parameter int ACT_VAL    = 0
) (
    input  logic [PE*ACC_BITS-1:0]                        acc,
    input  logic [PE*(NTHR > 0 ? NTHR : 1)*ACC_BITS-1:0]  thr,
    output logic [PE*OBITS-1:0]                           out
);
    if (PE < 1 || ACC_BITS < 1 || OBITS < 1 || NTHR < 0) begin : g_bad_shape
        $error("onebit_threshold: PE (%0d), ACC_BITS (%0d), OBITS (%0d) must be >= 1, NTHR (%0d) >= 0",
               PE, ACC_BITS, OBITS, NTHR);
    end
    if (NTHR > 0 && OBITS < 31 && (1 << OBITS) < NTHR + 1) begin : g_bad_obits
        $error("onebit_threshold: %0d thresholds give %0d output levels, more than OBITS = %0d bits hold",
               NTHR, NTHR + 1, OBITS);
    end

    localparam int XW = (OBITS > ACC_BITS + 1) ? OBITS : ACC_BITS + 1;

    for (genvar p = 0; p < PE; p++) begin : g_pe
        // Compared one bit wider, so unsigned and two's complement values order alike.
        logic signed [ACC_BITS:0] a;
        assign a = {ACC_SIGNED & acc[p*ACC_BITS + ACC_BITS-1], acc[p*ACC_BITS +: ACC_BITS]};
        if (NTHR == 0) begin : g_raw
            logic signed [XW-1:0] wide;
            assign wide = XW'(a);
            assign out[p*OBITS +: OBITS] = wide[OBITS-1:0];
        end else begin : g_thr
            logic [NTHR-1:0] crossed;
            logic [$clog2(NTHR+1)-1:0] level;
            for (genvar k = 0; k < NTHR; k++) begin : g_cmp
                logic [ACC_BITS-1:0]      t_bits;
                logic signed [ACC_BITS:0] t;
                assign t_bits = thr[(p*NTHR + k)*ACC_BITS +: ACC_BITS];
                assign t = {ACC_SIGNED & t_bits[ACC_BITS-1], t_bits};
                assign crossed[k] = a >= t;
            end
            onebit_popcount #(.N(NTHR)) u_count (.clk(1'b0), .en(1'b0), .bits(crossed), .count(level));  // combinational
            logic signed [31:0] value;
            assign value = 32'(ACT_VAL) + 32'(level);
            assign out[p*OBITS +: OBITS] = value[OBITS-1:0];
        end
    end
endmodule
