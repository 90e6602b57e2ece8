// Behavioural external memory for simulation tops (Verilator).
//
// WORDS words of WIDTH bits, BEAT words per bus beat (word n of a beat is
// bits n*WIDTH and up).  Plusargs: +image=FILE loads the memory ($readmemh,
// one word per line, hexadecimal) at time zero; +latency=N (default 2) and
// +jitter=J (default 0) set each read's latency to N plus a random 0..J
// cycles, responses staying in command order; +dump=FILE writes the whole
// memory ($writememh) on the first rising edge of `dump`.
module neuflow_sim_memory #(
    parameter WORDS = 65536,
    parameter BEAT = 4,
    parameter AW = 14,
    parameter WIDTH = 16
) (
    input  wire                  clk,
    input  wire                  rst,
    input  wire                  cmd_valid,
    output wire                  cmd_ready,
    input  wire [AW-1:0]         cmd_addr,
    input  wire                  cmd_we,
    input  wire [BEAT*WIDTH-1:0] cmd_wdata,
    input  wire [BEAT-1:0]       cmd_wmask,
    output wire                  resp_valid,
    input  wire                  resp_ready,
    output wire [BEAT*WIDTH-1:0] resp_data,
    input  wire                  dump
);
    localparam DEPTH = 64;
    reg [WIDTH-1:0] mem [0:WORDS-1];
    reg [BEAT*WIDTH-1:0] q_data [0:DEPTH-1];   // read data, captured in command order
    reg [63:0]      q_due  [0:DEPTH-1];
    reg [6:0]       q_head, q_tail, q_count;
    reg [63:0]      now, last_due;
    reg             dumped;
    integer latency, jitter, n;
    reg [8*512-1:0] image_file, dump_file;
    reg [63:0]      due;
    reg [BEAT*WIDTH-1:0] beat;

    initial begin
        if (!$value$plusargs("latency=%d", latency)) latency = 2;
        if (!$value$plusargs("jitter=%d", jitter)) jitter = 0;
        for (n = 0; n < WORDS; n = n + 1) mem[n] = 0;
        if ($value$plusargs("image=%s", image_file)) $readmemh(image_file, mem);
        if (!$value$plusargs("dump=%s", dump_file)) dump_file = 0;
    end

    assign cmd_ready = q_count < DEPTH;
    assign resp_valid = q_count != 0 && q_due[q_head[5:0]] <= now;
    assign resp_data = q_data[q_head[5:0]];

    always @(posedge clk) begin
        if (rst) begin
            q_head <= 0; q_tail <= 0; q_count <= 0; now <= 0; last_due <= 0; dumped <= 0;
        end else begin
            now <= now + 1;
            if (cmd_valid && cmd_ready) begin
                if (cmd_we) begin
                    for (n = 0; n < BEAT; n = n + 1)
                        if (cmd_wmask[n]) mem[cmd_addr * BEAT + n] <= cmd_wdata[n*WIDTH +: WIDTH];
                end else begin
                    for (n = 0; n < BEAT; n = n + 1)
                        beat[n*WIDTH +: WIDTH] = mem[cmd_addr * BEAT + n];
                    q_data[q_tail[5:0]] <= beat;
                    due = now + latency + (jitter > 0 ? {32'd0, $urandom % (jitter + 1)} : 64'd0);
                    if (due < last_due) due = last_due;     // responses stay in command order
                    q_due[q_tail[5:0]] <= due;
                    last_due <= due;
                    q_tail <= q_tail + 1;
                end
            end
            if (resp_valid && resp_ready) q_head <= q_head + 1;
            q_count <= q_count + ((cmd_valid && cmd_ready && !cmd_we) ? 1 : 0)
                               - ((resp_valid && resp_ready) ? 1 : 0);
            if (dump && !dumped) begin
                dumped <= 1;
                if (dump_file != 0) $writememh(dump_file, mem);
            end
        end
    end
endmodule
