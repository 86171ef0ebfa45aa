// onebit's streaming matrix-vector-activation unit (MVAU), the open RTL counterpart of FINN's
// MVAU_hls in XNOR mode and of its integer-input x bipolar-weight form, without multipliers.
//
// Computes out[h] = act(sum_w x[w] * W[w][h]) for a stream of MW-element input vectors, folded as
// FINN folds it: the input vector arrives as SF = MW/SIMD beats of SIMD elements (element 0 in the
// least significant bits), the output as NF = MH/PE beats of PE elements; for each output fold nf
// the unit consumes all SF input folds (the input vector is buffered on the first output fold and
// re-read for the others). Weights and thresholds come from init files in FINN's MVAU layout (see
// hw/rtl/README.md); `act` is the multi-threshold activation of onebit_threshold, or the raw
// accumulator when NTHR = 0.
//
// Pipeline (one fold step per cycle when not stalled), register ranks:
//   0 issue (counters) -> 1 input slice + weight memory read -> [MEM_REG: memory output register]
//   -> TREE_STAGES ranks inside the per-PE dot products -> accumulate over SF -> threshold compare
//   -> result register -> skid buffer -> out0_V.
// MEM_REG and TREE_STAGES add latency, never cycles per vector (hw/rtl/README.md: latency);
// hw.rtl.layout chooses them, and LUT_ROM_DEPTH (the deepest memory read from LUTs in one cycle), from
// the target clock. Every rank advances on `advance`, which
// depends only on registers, so the input's TREADY has no combinational path from the output's
// TREADY.
module onebit_mvau #(
    parameter int    MW          = 16,
    parameter int    MH          = 16,
    parameter int    PE          = 4,
    parameter int    SIMD        = 4,
    parameter int    IBITS       = 1,    // input element bits
    parameter bit    ISIGNED     = 0,    // input two's complement (add/sub mode only)
    parameter bit    XNOR        = 1,    // 1: binary x binary XNOR-popcount; 0: IBITS-bit x bipolar
    parameter int    ACC_BITS    = 8,
    parameter bit    ACC_SIGNED  = 0,
    parameter int    NTHR        = 1,    // thresholds per output channel; 0: raw accumulator out
    parameter int    OBITS       = 1,
    parameter int    ACT_VAL     = 0,
    parameter        WEIGHT_FILE = "weights.dat",
    parameter        THRESH_FILE = "thresholds.dat",
    parameter        RAM_STYLE   = "auto",   // weight memory: auto, block, distributed (FINN's ram_style)
    parameter        RAM_STYLE_THRESHOLDS = "auto",
    parameter int    MEM_REG     = 1,    // 1: output register on the weight and threshold memories
    parameter int    TREE_STAGES = 0,    // register ranks inside each PE's dot product (adder tree)
    parameter int    LUT_ROM_DEPTH = 0   // "auto" memories deeper than this go to block RAM (0: no limit)
) (
    input  logic                                   ap_clk,
    input  logic                                   ap_rst_n,
    input  logic [((SIMD*IBITS+7)/8)*8-1:0]        in0_V_TDATA,
    input  logic                                   in0_V_TVALID,
    output logic                                   in0_V_TREADY,
    output logic [((PE*OBITS+7)/8)*8-1:0]          out0_V_TDATA,
    output logic                                   out0_V_TVALID,
    input  logic                                   out0_V_TREADY
);
    // ---- parameter checks at elaboration -------------------------------------------------------
    if (MW < 1 || MH < 1 || PE < 1 || SIMD < 1) begin : g_bad_dims
        $error("onebit_mvau: MW (%0d), MH (%0d), PE (%0d), SIMD (%0d) must be at least 1", MW, MH, PE, SIMD);
    end
    if (MW % SIMD != 0) begin : g_bad_simd
        $error("onebit_mvau: SIMD (%0d) must divide MW (%0d)", SIMD, MW);
    end
    if (MH % PE != 0) begin : g_bad_pe
        $error("onebit_mvau: PE (%0d) must divide MH (%0d)", PE, MH);
    end
    if (XNOR && (IBITS != 1 || ISIGNED)) begin : g_bad_xnor
        $error("onebit_mvau: XNOR mode needs unsigned 1-bit (binary) inputs, got IBITS = %0d", IBITS);
    end
    if (ACC_BITS < 2 || ACC_BITS > 62) begin : g_bad_acc
        $error("onebit_mvau: ACC_BITS (%0d) must be in 2..62", ACC_BITS);
    end
    if (MEM_REG != 0 && MEM_REG != 1) begin : g_bad_mem_reg
        $error("onebit_mvau: MEM_REG (%0d) must be 0 or 1", MEM_REG);
    end
    // a dot product has clog2(SIMD) adder levels and one more (popcount(~w)); more ranks only add latency
    if (TREE_STAGES < 0 || TREE_STAGES > $clog2(SIMD) + 1) begin : g_bad_tree_stages
        $error("onebit_mvau: TREE_STAGES (%0d) must be in 0..clog2(SIMD)+1 = %0d for SIMD %0d",
               TREE_STAGES, $clog2(SIMD) + 1, SIMD);
    end

    localparam int SF    = MW / SIMD;          // synapse folds per output fold
    localparam int NF    = MH / PE;            // output (neuron) folds
    localparam int WMEM  = SF * NF;            // weight words
    localparam int IW    = SIMD * IBITS;
    localparam int OW    = PE * OBITS;
    localparam int DW    = XNOR ? $clog2(SIMD + 1) : IBITS + 1 + $clog2(SIMD);
    localparam int SFW   = SF > 1 ? $clog2(SF) : 1;
    localparam int NFW   = NF > 1 ? $clog2(NF) : 1;
    localparam int WAW   = WMEM > 1 ? $clog2(WMEM) : 1;
    localparam int TW    = PE * (NTHR > 0 ? NTHR : 1) * ACC_BITS;

    logic clk, rst_n;
    assign clk   = ap_clk;
    assign rst_n = ap_rst_n;

    // ---- rank 0: fold counters, issue ----------------------------------------------------------
    logic           advance;          // the whole pipeline moves this cycle
    logic           res_valid;        // the result register holds a result
    logic           skid_ready;       // registered ready of the output skid buffer
    logic [SFW-1:0] sf;
    logic [NFW-1:0] nf;
    logic [WAW-1:0] waddr;
    logic           need_input;       // first output fold: x comes from the stream
    logic           issue;

    assign advance      = !res_valid || skid_ready;
    assign need_input   = (nf == '0);
    assign in0_V_TREADY = advance && need_input;
    assign issue        = advance && (!need_input || in0_V_TVALID);

    always_ff @(posedge clk) begin
        if (!rst_n) begin
            sf    <= '0;
            nf    <= '0;
            waddr <= '0;
        end else if (issue) begin
            if (sf == SFW'(SF - 1)) begin
                sf <= '0;
                nf <= (nf == NFW'(NF - 1)) ? '0 : nf + 1'b1;
            end else begin
                sf <= sf + 1'b1;
            end
            waddr <= (waddr == WAW'(WMEM - 1)) ? '0 : waddr + 1'b1;
        end
    end

    // rank 1: the input slice and the weight memory's read register; fold position in `ctrl`
    localparam int CW   = 3 + NFW;                 // valid, first, last, nf
    localparam int P    = MEM_REG + TREE_STAGES;   // ranks between rank 1 and the dot products' outputs
    logic [IW-1:0]        s1_x;
    logic [PE*SIMD-1:0]   dot_w;                   // weights at the dot products' inputs (rank 1 + MEM_REG)
    logic [IW-1:0]        dot_x;

    if (NF > 1) begin : g_input_buffer
        // The input vector is reused for every output fold: stored while the first fold streams it.
        logic [IW-1:0] buffer [SF];
        always_ff @(posedge clk) begin
            if (issue && need_input) buffer[sf] <= in0_V_TDATA[IW-1:0];
            if (advance) s1_x <= need_input ? in0_V_TDATA[IW-1:0] : buffer[sf];
        end
    end else begin : g_no_buffer
        always_ff @(posedge clk) begin
            if (advance) s1_x <= in0_V_TDATA[IW-1:0];
        end
    end

    // Read every cycle the pipeline advances: a rank that holds no step (a bubble) carries data no
    // one uses, and the memory's ranks stay in step with the others through stalls.
    onebit_rom #(.WIDTH(PE*SIMD), .DEPTH(WMEM), .INIT_FILE(WEIGHT_FILE), .RAM_STYLE(RAM_STYLE),
                 .OUT_REG(MEM_REG), .LUT_DEPTH(LUT_ROM_DEPTH)) u_weights (
        .clk(clk), .en(advance), .addr(waddr), .data(dot_w));

    if (MEM_REG == 1) begin : g_x_reg
        always_ff @(posedge clk) if (advance) dot_x <= s1_x;
    end else begin : g_x_direct
        assign dot_x = s1_x;
    end

    // fold position through ranks 1 .. 1+P (ctrl_at(k) = rank 1+k); flip-flops, not a shift-register LUT
    // (SRL clock-to-out is ~1.5 ns, and rank TREE_STAGES is tapped for the threshold address)
    (* srl_style = "register" *) logic [(P+1)*CW-1:0] ctrl;
    always_ff @(posedge clk) begin
        if (advance) begin
            ctrl[CW-1:0] <= {nf, sf == SFW'(SF - 1), sf == '0, issue};
            for (int k = 1; k <= P; k++) ctrl[k*CW +: CW] <= ctrl[(k-1)*CW +: CW];
        end
        if (!rst_n) begin
            for (int k = 0; k <= P; k++) ctrl[k*CW] <= 1'b0;   // valid bits
        end
    end
    logic           d_valid, d_first, d_last;   // the step at the dot products' outputs
    assign {d_last, d_first, d_valid} = ctrl[P*CW +: 3];

    // ---- dot products, accumulation over the SF input folds ----------------------------------
    logic [PE*ACC_BITS-1:0] acc;
    logic                   s2_valid;
    logic [TW-1:0]          s2_thr;

    for (genvar p = 0; p < PE; p++) begin : g_pe
        logic [DW-1:0]       dot;
        logic [ACC_BITS-1:0] dot_ext;
        onebit_dot #(.SIMD(SIMD), .IBITS(IBITS), .ISIGNED(ISIGNED), .XNOR(XNOR), .STAGES(TREE_STAGES),
                     .DW(DW)) u_dot (
            .clk(clk), .en(advance), .x(dot_x), .w(dot_w[p*SIMD +: SIMD]), .dot(dot));
        // XNOR counts are unsigned; add/sub sums are two's complement. Wrapping modulo
        // 2**ACC_BITS is harmless: the final sum fits (layout.py sizes ACC_BITS from the weights).
        if (XNOR) begin : g_zext
            assign dot_ext = ACC_BITS'(dot);
        end else begin : g_sext
            assign dot_ext = ACC_BITS'($signed(dot));
        end
        always_ff @(posedge clk) begin
            if (advance && d_valid)
                acc[p*ACC_BITS +: ACC_BITS] <= (d_first ? '0 : acc[p*ACC_BITS +: ACC_BITS]) + dot_ext;
        end
    end

    always_ff @(posedge clk) begin
        if (!rst_n) s2_valid <= 1'b0;
        else if (advance) s2_valid <= d_valid && d_last;
    end

    if (NTHR > 0) begin : g_thr_mem
        // The accumulator's rank is 2+P; a read of latency 1+MEM_REG issued from rank 1+TREE_STAGES
        // lands there with the same step's output fold (every rank advances together).
        logic [NFW-1:0] thr_addr;
        assign thr_addr = ctrl[TREE_STAGES*CW + 3 +: NFW];
        onebit_rom #(.WIDTH(TW), .DEPTH(NF), .INIT_FILE(THRESH_FILE),
                     .RAM_STYLE(RAM_STYLE_THRESHOLDS), .OUT_REG(MEM_REG), .LUT_DEPTH(LUT_ROM_DEPTH)) u_thresholds (
            .clk(clk), .en(advance), .addr(thr_addr), .data(s2_thr));
    end else begin : g_no_thr
        assign s2_thr = '0;
    end

    // ---- stage 2 -> 3: activation, result register ---------------------------------------------
    logic [OW-1:0] activated, res;
    onebit_threshold #(.PE(PE), .NTHR(NTHR), .ACC_BITS(ACC_BITS), .ACC_SIGNED(ACC_SIGNED),
                       .OBITS(OBITS), .ACT_VAL(ACT_VAL)) u_act (
        .acc(acc), .thr(s2_thr), .out(activated));

    always_ff @(posedge clk) begin
        if (!rst_n) res_valid <= 1'b0;
        else if (advance) res_valid <= s2_valid;
        if (advance && s2_valid) res <= activated;
    end

    // ---- output: skid buffer (registered ready toward the pipeline) ----------------------------
    logic [OW-1:0] out_data;
    onebit_skid #(.WIDTH(OW)) u_out (
        .clk(clk), .rst_n(rst_n),
        .s_data(res), .s_valid(res_valid), .s_ready(skid_ready),
        .m_data(out_data), .m_valid(out0_V_TVALID), .m_ready(out0_V_TREADY));
    assign out0_V_TDATA = (((OW+7)/8)*8)'(out_data);   // zero padding up to whole bytes
endmodule
