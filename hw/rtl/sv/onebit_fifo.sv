// Synchronous AXI-stream FIFO of DEPTH beats plus its output register (for stitching nodes);
// registered read port, so an inferred memory maps to LUTRAM/BRAM. `count` reports the fill level
// for FIFO sizing.
module onebit_fifo #(
    parameter int WIDTH = 8,
    parameter int DEPTH = 16
) (
    input  logic                       ap_clk,
    input  logic                       ap_rst_n,
    input  logic [WIDTH-1:0]           in0_V_TDATA,
    input  logic                       in0_V_TVALID,
    output logic                       in0_V_TREADY,
    output logic [WIDTH-1:0]           out0_V_TDATA,
    output logic                       out0_V_TVALID,
    input  logic                       out0_V_TREADY,
    output logic [$clog2(DEPTH+1)-1:0] count
);
    // FINN's port names (StreamingFIFO), so the same harness and stitching code drive it.
    logic clk, rst_n, s_valid, s_ready, m_valid, m_ready;
    logic [WIDTH-1:0] s_data, m_data;
    assign clk = ap_clk;
    assign rst_n = ap_rst_n;
    assign s_data = in0_V_TDATA;
    assign s_valid = in0_V_TVALID;
    assign in0_V_TREADY = s_ready;
    assign out0_V_TDATA = m_data;
    assign out0_V_TVALID = m_valid;
    assign m_ready = out0_V_TREADY;
    if (WIDTH < 1) begin : g_bad_width
        $error("onebit_fifo: WIDTH (%0d) must be at least 1", WIDTH);
    end
    if (DEPTH < 2) begin : g_bad_depth
        $error("onebit_fifo: DEPTH (%0d) must be at least 2", DEPTH);
    end

    localparam int AW = $clog2(DEPTH);
    logic [WIDTH-1:0] mem [DEPTH];
    logic [AW-1:0]    wr_ptr, rd_ptr;
    logic [$clog2(DEPTH+1)-1:0] stored;   // beats in mem, not counting the output register
    logic push, pop_mem;

    assign s_ready = stored != DEPTH[$clog2(DEPTH+1)-1:0];
    assign push    = s_valid && s_ready;
    assign pop_mem = stored != 0 && (!m_valid || m_ready);
    assign count   = stored + {{($clog2(DEPTH+1)-1){1'b0}}, m_valid};

    logic [AW-1:0] wr_next, rd_next;
    assign wr_next = (wr_ptr == AW'(DEPTH - 1)) ? '0 : wr_ptr + 1'b1;
    assign rd_next = (rd_ptr == AW'(DEPTH - 1)) ? '0 : rd_ptr + 1'b1;

    always_ff @(posedge clk) begin
        if (push) mem[wr_ptr] <= s_data;
        if (pop_mem) m_data <= mem[rd_ptr];
    end

    always_ff @(posedge clk) begin
        if (!rst_n) begin
            wr_ptr  <= '0;
            rd_ptr  <= '0;
            stored  <= '0;
            m_valid <= 1'b0;
        end else begin
            if (push) wr_ptr <= wr_next;
            if (pop_mem) rd_ptr <= rd_next;
            stored <= stored + ($clog2(DEPTH+1))'(push) - ($clog2(DEPTH+1))'(pop_mem);
            if (pop_mem) m_valid <= 1'b1;
            else if (m_ready) m_valid <= 1'b0;
        end
    end
endmodule
