// Parameter memory (weights or thresholds): DEPTH words of WIDTH bits, contents from an init file
// that onebit writes (hw/rtl/layout.py: one hex word per line, element 0 in the least significant
// bits). Synchronous read with enable, so synthesis may map it to BRAM, LUTRAM or LUT logic.
module onebit_rom #(
    parameter int    WIDTH     = 8,
    parameter int    DEPTH     = 1,
    parameter     INIT_FILE = ""
) (
    input  logic                              clk,
    input  logic                              en,
    input  logic [(DEPTH > 1 ? $clog2(DEPTH) : 1)-1:0] addr,
    output logic [WIDTH-1:0]                  data
);
    if (WIDTH < 1 || DEPTH < 1) begin : g_bad_shape
        $error("onebit_rom: WIDTH (%0d) and DEPTH (%0d) must be at least 1", WIDTH, DEPTH);
    end
    if (INIT_FILE == "") begin : g_no_file
        $error("onebit_rom: INIT_FILE is not set");
    end

    logic [WIDTH-1:0] mem [DEPTH];
    initial $readmemh(INIT_FILE, mem);

    always_ff @(posedge clk) begin
        if (en) data <= mem[addr];
    end
endmodule
