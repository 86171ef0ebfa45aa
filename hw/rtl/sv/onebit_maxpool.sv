// Streaming max pool over windows (FINN's Pool_hls with Function = MaxPool), fed by a depthwise
// sliding-window generator (ConvolutionInputGenerator with depthwise = 1), whose stream order per
// output pixel is (channel fold, window element, PE lane): every K2 consecutive beats hold one
// window of PE channels, and the unit emits their lane-wise maximum as one beat.
// BITS-bit elements, two's complement when SIGNED; BINARY and BIPOLAR (bit 1 = +1) are unsigned
// 1-bit, where the maximum is the OR over the window.
module onebit_maxpool #(
    parameter int CHANNELS = 8,
    parameter int PE       = 2,
    parameter int K2       = 4,     // elements per window (KernelSize product)
    parameter int BITS     = 1,
    parameter bit SIGNED   = 0
) (
    input  logic                                ap_clk,
    input  logic                                ap_rst_n,
    input  logic [((PE*BITS+7)/8)*8-1:0]        in0_V_TDATA,
    input  logic                                in0_V_TVALID,
    output logic                                in0_V_TREADY,
    output logic [((PE*BITS+7)/8)*8-1:0]        out0_V_TDATA,
    output logic                                out0_V_TVALID,
    input  logic                                out0_V_TREADY
);
    if (CHANNELS < 1 || PE < 1 || K2 < 1 || BITS < 1) begin : g_bad_dims
        $error("onebit_maxpool: CHANNELS (%0d), PE (%0d), K2 (%0d), BITS (%0d) must be at least 1",
               CHANNELS, PE, K2, BITS);
    end
    if (CHANNELS % PE != 0) begin : g_bad_pe
        $error("onebit_maxpool: PE (%0d) must divide CHANNELS (%0d)", PE, CHANNELS);
    end

    localparam int W  = PE * BITS;
    localparam int KW = K2 > 1 ? $clog2(K2) : 1;

    logic clk, rst_n;
    assign clk   = ap_clk;
    assign rst_n = ap_rst_n;

    logic          advance, res_valid, skid_ready, take;
    logic [KW-1:0] k;
    logic [W-1:0]  running, merged, res;

    assign advance      = !res_valid || skid_ready;
    assign in0_V_TREADY = advance;
    assign take         = advance && in0_V_TVALID;

    for (genvar p = 0; p < PE; p++) begin : g_lane
        logic [BITS-1:0] a, b;
        logic            b_larger;
        assign a = running[p*BITS +: BITS];
        assign b = in0_V_TDATA[p*BITS +: BITS];
        assign b_larger = SIGNED ? ($signed(b) > $signed(a)) : (b > a);
        // The first element of a window starts the maximum afresh.
        assign merged[p*BITS +: BITS] = (k == '0 || b_larger) ? b : a;
    end

    always_ff @(posedge clk) begin
        if (!rst_n) begin
            k         <= '0;
            res_valid <= 1'b0;
        end else if (advance) begin
            res_valid <= take && (k == KW'(K2 - 1));
            if (take) k <= (k == KW'(K2 - 1)) ? '0 : k + 1'b1;
        end
        if (take) begin
            running <= merged;
            if (k == KW'(K2 - 1)) res <= merged;
        end
    end

    logic [W-1:0] out_data;
    onebit_skid #(.WIDTH(W)) u_out (
        .clk(clk), .rst_n(rst_n),
        .s_data(res), .s_valid(res_valid), .s_ready(skid_ready),
        .m_data(out_data), .m_valid(out0_V_TVALID), .m_ready(out0_V_TREADY));
    assign out0_V_TDATA = (((W+7)/8)*8)'(out_data);
endmodule
