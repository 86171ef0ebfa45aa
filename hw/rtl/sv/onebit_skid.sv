// Two-entry skid buffer: a full-throughput AXI-stream register slice whose s_ready is a flip-flop,
// so no combinational path runs from m_ready (downstream) to s_ready (upstream).
module onebit_skid #(
    parameter int WIDTH = 8
) (
    input  logic             clk,
    input  logic             rst_n,
    input  logic [WIDTH-1:0] s_data,
    input  logic             s_valid,
    output logic             s_ready,
    output logic [WIDTH-1:0] m_data,
    output logic             m_valid,
    input  logic             m_ready
);
    if (WIDTH < 1) begin : g_bad_width
        $error("onebit_skid: WIDTH (%0d) must be at least 1", WIDTH);
    end

    logic             parked;      // the second entry holds a beat
    logic [WIDTH-1:0] parked_data;

    assign s_ready = !parked;

    always_ff @(posedge clk) begin
        if (!rst_n) begin
            m_valid <= 1'b0;
            parked  <= 1'b0;
        end else if (!m_valid || m_ready) begin
            // The output register is free (or being emptied): refill it, parked beat first.
            if (parked) begin
                m_data  <= parked_data;
                m_valid <= 1'b1;
                parked  <= 1'b0;
            end else begin
                m_valid <= s_valid;
                if (s_valid) m_data <= s_data;
            end
        end else if (s_valid && !parked) begin
            // Output stalled while a beat arrives: park it; s_ready falls on the next cycle.
            parked_data <= s_data;
            parked      <= 1'b1;
        end
    end
endmodule
