// The fast simulation harness: a Verilator model of neuflow_hdl.soc.SimTop
// driven by this C++ main, which is also its external memory.  No Python, no
// VPI and no cocotb in the run.
//
// Build-time constants (-D): BEAT_WORDS (words per bus beat), WORD_BITS (bits
// of a memory word), MEMORY_WORDS (words the memory holds), RESET_CYCLES (the
// cycles the top holds itself in reset, SimTop.RESET_CYCLES).
//
// Plusargs:
//   +image=FILE       raw little-endian words (2 bytes each up to 16 bits,
//                     else 4) loaded from address 0
//   +dump=FILE        at halt, the memory from address 0 up to the highest
//                     word loaded or written, in the same format
//   +latency=N        each read answers N cycles after its command (default 2)
//   +jitter=J         plus a random 0..J cycles, responses staying in order
//   +seed=S           seed of the jitter (default 1)
//   +max_cycles=N     stop unhalted after N cycles (default 50,000,000)
//   +trace=FILE       an FST waveform (builds made with --trace-fst only)
//
// Prints one JSON line: halted, halt_code, cycles (the processor's own cycle
// counter), steps (clock cycles simulated), extent (words dumped), seconds,
// and fault (an empty string, or what the memory refused).
//
// The memory's behaviour is that of a bus slave with a 64-entry read queue:
// cmd_ready while fewer than 64 reads wait; a write lands at the clock edge;
// a read's data is captured at the edge and offered from the cycle its delay
// has passed.  The memory is paged: pages that are never touched cost nothing.

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "Vtop.h"
#include "verilated.h"
#if VM_TRACE
#include "verilated_fst_c.h"
#endif

#ifndef BEAT_WORDS
#error "BEAT_WORDS must be defined"
#endif
#ifndef WORD_BITS
#error "WORD_BITS must be defined"
#endif
#ifndef MEMORY_WORDS
#error "MEMORY_WORDS must be defined"
#endif
#ifndef RESET_CYCLES
#error "RESET_CYCLES must be defined"
#endif

using word_t = std::conditional<(WORD_BITS <= 16), uint16_t, uint32_t>::type;
static const uint64_t WORD_MASK = (WORD_BITS >= 64) ? ~0ull : ((1ull << WORD_BITS) - 1);

// ---- the memory: pages allocated on first write ---------------------------

class PagedMemory {
  public:
    static const unsigned PAGE_BITS = 16;
    static const uint64_t PAGE_WORDS = 1ull << PAGE_BITS;

    explicit PagedMemory(uint64_t words) : words_(words), pages_((words + PAGE_WORDS - 1) / PAGE_WORDS) {}

    uint64_t words() const { return words_; }
    uint64_t extent() const { return extent_; }

    word_t read(uint64_t address) const {
        const auto& page = pages_[address >> PAGE_BITS];
        return page ? page[address & (PAGE_WORDS - 1)] : 0;
    }

    void write(uint64_t address, word_t value) {
        auto& page = pages_[address >> PAGE_BITS];
        if (!page) {
            page.reset(new word_t[PAGE_WORDS]);
            std::memset(page.get(), 0, PAGE_WORDS * sizeof(word_t));
        }
        page[address & (PAGE_WORDS - 1)] = value;
        if (address + 1 > extent_) extent_ = address + 1;
    }

    bool load(const char* path, std::string& error) {
        FILE* file = std::fopen(path, "rb");
        if (!file) { error = std::string("cannot open image ") + path; return false; }
        std::vector<word_t> buffer(PAGE_WORDS);
        uint64_t address = 0;
        size_t got;
        while ((got = std::fread(buffer.data(), sizeof(word_t), PAGE_WORDS, file)) > 0) {
            if (address + got > words_) {
                std::fclose(file);
                error = "image larger than the memory";
                return false;
            }
            for (size_t n = 0; n < got; n++) write(address + n, buffer[n] & WORD_MASK);
            address += got;
        }
        std::fclose(file);
        return true;
    }

    bool dump(const char* path) const {
        FILE* file = std::fopen(path, "wb");
        if (!file) return false;
        std::vector<word_t> zeros(PAGE_WORDS, 0);
        for (uint64_t base = 0; base < extent_; base += PAGE_WORDS) {
            const auto& page = pages_[base >> PAGE_BITS];
            uint64_t count = std::min<uint64_t>(PAGE_WORDS, extent_ - base);
            std::fwrite(page ? page.get() : zeros.data(), sizeof(word_t), count, file);
        }
        return std::fclose(file) == 0;
    }

  private:
    uint64_t words_;
    uint64_t extent_ = 0;
    std::vector<std::unique_ptr<word_t[]>> pages_;
};

// ---- words of a beat-wide port, whatever C++ type Verilator gave it --------

template <typename T>
static uint64_t beat_word(const T& port, unsigned index) {
    const unsigned bit = index * WORD_BITS;
    if constexpr (std::is_integral<T>::value) {
        return (static_cast<uint64_t>(port) >> bit) & WORD_MASK;
    } else {    // VlWide: 32-bit words, least significant first
        uint64_t pair = port[bit / 32];
        if (bit / 32 + 1 < T::Words) pair |= static_cast<uint64_t>(port[bit / 32 + 1]) << 32;
        return (pair >> (bit % 32)) & WORD_MASK;
    }
}

template <typename T>
static void set_beat_word(T& port, unsigned index, uint64_t value) {
    const unsigned bit = index * WORD_BITS;
    if constexpr (std::is_integral<T>::value) {
        port = static_cast<T>((static_cast<uint64_t>(port) & ~(WORD_MASK << bit)) | (value << bit));
    } else {
        for (unsigned b = 0; b < WORD_BITS; b++) {
            const unsigned at = bit + b;
            const uint32_t mask = 1u << (at % 32);
            port[at / 32] = ((value >> b) & 1) ? (port[at / 32] | mask) : (port[at / 32] & ~mask);
        }
    }
}

// ---- the bus slave ---------------------------------------------------------

struct Command {            // a command as the bus carried it before a clock edge
    bool valid, we;
    uint64_t beat, wmask;
    word_t wdata[BEAT_WORDS];

    void sample(const Vtop& top, bool reset) {
        valid = !reset && top.cmd_valid && top.cmd_ready;
        we = top.cmd_we;
        beat = top.cmd_addr;
        wmask = top.cmd_wmask;
        if (valid && we)
            for (unsigned n = 0; n < BEAT_WORDS; n++) wdata[n] = beat_word(top.cmd_wdata, n);
    }
};

struct Read {
    word_t data[BEAT_WORDS];
    uint64_t due;
};

class MemorySlave {
  public:
    static const unsigned DEPTH = 64;

    MemorySlave(PagedMemory& memory, uint64_t latency, uint64_t jitter, uint64_t seed)
        : memory_(memory), latency_(latency), jitter_(jitter), random_(seed) {}

    std::string fault;

    // The slave's outputs, from its registered state only.
    void drive(Vtop& top) const {
        top.cmd_ready = count_ < DEPTH;
        const bool valid = count_ != 0 && queue_[head_].due <= now_;
        top.resp_valid = valid;
        if (valid)
            for (unsigned n = 0; n < BEAT_WORDS; n++) set_beat_word(top.resp_data, n, queue_[head_].data[n]);
    }

    // One clock edge, with the bus as the design drove it before the edge.
    void edge(const Command& command, bool response) {
        if (command.valid) {
            const uint64_t base = command.beat * BEAT_WORDS;
            const bool inside = base + BEAT_WORDS <= memory_.words();
            if (!inside && fault.empty())
                fault = "memory access at beat " + std::to_string(command.beat) + " beyond its " +
                        std::to_string(memory_.words()) + " words";
            if (command.we && inside) {
                for (unsigned n = 0; n < BEAT_WORDS; n++)
                    if ((command.wmask >> n) & 1) memory_.write(base + n, command.wdata[n]);
            } else if (!command.we) {
                Read& read = queue_[tail_];
                for (unsigned n = 0; n < BEAT_WORDS; n++) read.data[n] = inside ? memory_.read(base + n) : 0;
                uint64_t due = now_ + latency_ + (jitter_ ? random_() % (jitter_ + 1) : 0);
                if (due < last_due_) due = last_due_;
                read.due = last_due_ = due;
                tail_ = (tail_ + 1) % DEPTH;
                count_++;
            }
        }
        if (response) {
            head_ = (head_ + 1) % DEPTH;
            count_--;
        }
        now_++;
    }

  private:
    PagedMemory& memory_;
    uint64_t latency_, jitter_;
    std::mt19937_64 random_;
    Read queue_[DEPTH];
    unsigned head_ = 0, tail_ = 0, count_ = 0;
    uint64_t now_ = 0, last_due_ = 0;
};

// ---- main ------------------------------------------------------------------

static std::string plusarg_text(VerilatedContext& context, const char* name) {
    const std::string prefix = std::string("+") + name + "=";
    const char* match = context.commandArgsPlusMatch(prefix.c_str() + 1);
    if (!match || !*match) return "";
    return std::string(match + prefix.size());
}

static uint64_t plusarg_number(VerilatedContext& context, const char* name, uint64_t otherwise) {
    const std::string text = plusarg_text(context, name);
    return text.empty() ? otherwise : std::strtoull(text.c_str(), nullptr, 10);
}

static std::string json_text(const std::string& text) {
    std::string out = "\"";
    for (char c : text) {
        if (c == '"' || c == '\\') out += '\\';
        if (static_cast<unsigned char>(c) >= 0x20) out += c;
    }
    return out + "\"";
}

int main(int argc, char** argv) {
    auto context = std::make_unique<VerilatedContext>();
    context->commandArgs(argc, argv);
    const uint64_t max_cycles = plusarg_number(*context, "max_cycles", 50000000);
    PagedMemory memory(MEMORY_WORDS);
    std::string error;
    const std::string image = plusarg_text(*context, "image");
    if (!image.empty() && !memory.load(image.c_str(), error)) {
        std::fprintf(stderr, "harness: %s\n", error.c_str());
        return 2;
    }
    MemorySlave slave(memory, plusarg_number(*context, "latency", 2), plusarg_number(*context, "jitter", 0),
                      plusarg_number(*context, "seed", 1));
    auto top = std::make_unique<Vtop>(context.get());

#if VM_TRACE
    std::unique_ptr<VerilatedFstC> trace;
    const std::string trace_file = plusarg_text(*context, "trace");
    if (!trace_file.empty()) {
        context->traceEverOn(true);
        trace.reset(new VerilatedFstC);
        top->trace(trace.get(), 99);
        trace->open(trace_file.c_str());
    }
#define DUMP() do { if (trace) trace->dump(context->time()); } while (0)
#else
#define DUMP() do {} while (0)
#endif

    const auto started = std::chrono::steady_clock::now();
    // The top holds itself in reset for its first RESET_CYCLES cycles.
    uint64_t steps = 0, after_halt = 0;
    Command command;
    // The top registers its memory inputs (SimTop): the slave drives, before
    // each rising edge, what the design sees in the cycle after it.  The
    // design's outputs depend on its registers only, so they are settled
    // after the edge's evaluation.
    slave.drive(*top);
    top->clk = 0;
    top->eval();
    auto cycle = [&]() {
        const bool reset = steps < (uint64_t)RESET_CYCLES;
        command.sample(*top, reset);
        const bool response = !reset && top->resp_valid && top->resp_ready;
        if (!reset) slave.edge(command, response);
        slave.drive(*top);
        top->clk = 1;
        top->eval();
        context->timeInc(5);
        DUMP();
        top->clk = 0;
        top->eval();
        context->timeInc(5);
        DUMP();
        steps++;
    };
    for (uint64_t n = 0; n < (uint64_t)RESET_CYCLES; n++) cycle();
    // Two cycles past the halt let the last writes land.
    while (steps < max_cycles + 4 && after_halt < 2 && slave.fault.empty()) {
        cycle();
        if (top->halted) after_halt++;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const bool halted = top->halted;
    const uint64_t halt_code = top->halt_code, cycles = top->cycles;
    top->final();
#if VM_TRACE
    if (trace) trace->close();
#endif

    const std::string dump = plusarg_text(*context, "dump");
    if (!dump.empty() && !memory.dump(dump.c_str())) {
        std::fprintf(stderr, "harness: cannot write %s\n", dump.c_str());
        return 2;
    }
    std::printf("{\"halted\": %d, \"halt_code\": %" PRIu64 ", \"cycles\": %" PRIu64 ", \"steps\": %" PRIu64
                ", \"extent\": %" PRIu64 ", \"seconds\": %.6f, \"fault\": %s}\n",
                halted ? 1 : 0, halt_code, cycles, steps, memory.extent(), seconds, json_text(slave.fault).c_str());
    return 0;
}
