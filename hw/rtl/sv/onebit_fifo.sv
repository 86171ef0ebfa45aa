// Synchronous AXI-stream FIFO of DEPTH beats (for stitching nodes); registered read port, so an
// inferred memory maps to LUTRAM/BRAM. `count` reports the fill level for FIFO sizing.
module onebit_fifo #(
    parameter int WIDTH = 8,
    parameter int DEPTH = 16
) (
    input  logic                       clk,
    input  logic                       rst_n,
    input  logic [WIDTH-1:0]           s_data,
    input  logic                       s_valid,
    output logic                       s_ready,
    output logic [WIDTH-1:0]           m_data,
    output logic                       m_valid,
    input  logic                       m_ready,
    output logic [$clog2(DEPTH+1)-1:0] count
);
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
