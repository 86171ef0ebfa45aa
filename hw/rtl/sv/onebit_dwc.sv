// Stream width converter between two nodes whose beats hold different numbers of elements (FINN's
// StreamingDataWidthConverter, which InsertDWC puts where a producer's PE and the consumer's SIMD
// differ): IN_ELEMS elements of EBITS bits per input beat, OUT_ELEMS per output beat, element 0 in the
// least significant bits on both sides, in order. Any pair of element counts works (not only
// multiples): a shift buffer of IN_ELEMS + OUT_ELEMS elements takes an input beat whenever it has room
// and emits an output beat whenever it holds OUT_ELEMS elements, which keeps both sides at full rate.
// TDATA is padded to whole bytes (FINN's padded stream widths). Ready and valid come from registers
// only: no combinational path from out0_V_TREADY to in0_V_TREADY.
module onebit_dwc #(
    parameter int EBITS     = 1,
    parameter int IN_ELEMS  = 8,
    parameter int OUT_ELEMS = 2
) (
    input  logic                                   ap_clk,
    input  logic                                   ap_rst_n,
    input  logic [((IN_ELEMS*EBITS+7)/8)*8-1:0]    in0_V_TDATA,
    input  logic                                   in0_V_TVALID,
    output logic                                   in0_V_TREADY,
    output logic [((OUT_ELEMS*EBITS+7)/8)*8-1:0]   out0_V_TDATA,
    output logic                                   out0_V_TVALID,
    input  logic                                   out0_V_TREADY
);
    if (EBITS < 1 || IN_ELEMS < 1 || OUT_ELEMS < 1) begin : g_bad
        $error("onebit_dwc: EBITS (%0d), IN_ELEMS (%0d), OUT_ELEMS (%0d) must be at least 1", EBITS, IN_ELEMS, OUT_ELEMS);
    end

    localparam int CAP = IN_ELEMS + OUT_ELEMS;            // buffer capacity in elements
    localparam int CW  = $clog2(CAP + 1);
    localparam int IW  = IN_ELEMS * EBITS;
    localparam int OW  = OUT_ELEMS * EBITS;
    localparam int OWP = ((OUT_ELEMS * EBITS + 7) / 8) * 8;

    logic [CAP*EBITS-1:0] buffer;
    logic [CW-1:0]        count;      // valid elements, from bit 0 up
    logic                 in_fire, out_fire;

    assign in0_V_TREADY  = ap_rst_n && (32'(count) + IN_ELEMS <= CAP);   // 32 bits: no wrap-around
    assign out0_V_TVALID = 32'(count) >= OUT_ELEMS;
    assign out0_V_TDATA  = OWP'(buffer[OW-1:0]);
    assign in_fire       = in0_V_TVALID && in0_V_TREADY;
    assign out_fire      = out0_V_TVALID && out0_V_TREADY;

    logic [CAP*EBITS-1:0] shifted;
    logic [CW-1:0]        kept;
    always_comb begin
        shifted = out_fire ? (buffer >> OW) : buffer;
        kept    = out_fire ? count - CW'(OUT_ELEMS) : count;
    end

    always_ff @(posedge ap_clk) begin
        if (!ap_rst_n) begin
            count  <= '0;
            buffer <= '0;
        end else begin
            if (in_fire) begin
                // clear the element slots above `kept`, then place the new beat there
                buffer <= (shifted & ~({CAP*EBITS{1'b1}} << (kept * EBITS)))
                          | ((CAP*EBITS)'(in0_V_TDATA[IW-1:0]) << (kept * EBITS));
                count  <= CW'(32'(kept) + IN_ELEMS);
            end else begin
                buffer <= shifted;
                count  <= kept;
            end
        end
    end
endmodule
