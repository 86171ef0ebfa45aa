// Parameter memory (weights or thresholds): DEPTH words of WIDTH bits, contents from an init file
// that onebit writes (hw/rtl/layout.py: one hex word per line, element 0 in the least significant
// bits). Synchronous read with enable, so synthesis may map it to BRAM, LUTRAM or LUT logic.
// RAM_STYLE as FINN's ram_style: "block", "distributed", or "auto" (block from 16 Kbit on: yosys
// otherwise turns every ROM into LUT logic, which costs ~1 LUT per 64 bits).
// OUT_REG = 1 adds an output register after the read register (a block RAM's DOA_REG / DOB_REG):
// data appears two cycles of `en` after its address instead of one, and the path out of the
// memory ends in a register next to it (block RAM clock-to-out 2.45 ns without it on 7-series -1,
// 0.88 ns with it).
// LUT_DEPTH > 0: an "auto" memory deeper than LUT_DEPTH words goes to block RAM too. A LUT ROM's read is
// a mux tree, one slice (LUT6 + MUXF7 + MUXF8) per 256 words and more LUT levels above it; onebit_mvau
// sets the limit from the target clock (hw/rtl/timing.py: lut_rom_depth).
module onebit_rom #(
    parameter int    WIDTH     = 8,
    parameter int    DEPTH     = 1,
    parameter     INIT_FILE = "",
    parameter     RAM_STYLE = "auto",
    parameter int OUT_REG   = 0,
    parameter int LUT_DEPTH = 0
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

    if (RAM_STYLE != "auto" && RAM_STYLE != "block" && RAM_STYLE != "distributed") begin : g_bad_style
        $error("onebit_rom: RAM_STYLE must be auto, block or distributed");
    end
    if (OUT_REG != 0 && OUT_REG != 1) begin : g_bad_out_reg
        $error("onebit_rom: OUT_REG (%0d) must be 0 or 1", OUT_REG);
    end

    if (LUT_DEPTH < 0) begin : g_bad_lut_depth
        $error("onebit_rom: LUT_DEPTH (%0d) must be at least 0", LUT_DEPTH);
    end
    localparam bit BLOCK = RAM_STYLE == "block" ||
                           (RAM_STYLE == "auto" && (WIDTH * DEPTH >= 16384 || (LUT_DEPTH > 0 && DEPTH > LUT_DEPTH)));

    logic [WIDTH-1:0] read;
    if (OUT_REG == 1) begin : g_out_reg
        always_ff @(posedge clk) if (en) data <= read;
    end else begin : g_no_out_reg
        assign data = read;
    end

    if (BLOCK) begin : g_block
        (* rom_style = "block", ram_style = "block" *) logic [WIDTH-1:0] mem [DEPTH];
        initial $readmemh(INIT_FILE, mem);
        always_ff @(posedge clk) if (en) read <= mem[addr];
    end else if (RAM_STYLE == "distributed") begin : g_distributed
`ifdef YOSYS
        // yosys 0.23 maps no read-only memory to LUTRAM ("no valid mapping found" for ram_style
        // distributed): as LUT logic it is what Vivado's distributed ROM is, ~1 LUT6 per 64 bits
        (* ram_style = "logic" *) logic [WIDTH-1:0] mem [DEPTH];
`else
        (* rom_style = "distributed", ram_style = "distributed" *) logic [WIDTH-1:0] mem [DEPTH];
`endif
        initial $readmemh(INIT_FILE, mem);
        always_ff @(posedge clk) if (en) read <= mem[addr];
    end else begin : g_auto
        logic [WIDTH-1:0] mem [DEPTH];
        initial $readmemh(INIT_FILE, mem);
        always_ff @(posedge clk) if (en) read <= mem[addr];
    end
endmodule
