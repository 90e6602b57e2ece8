// The board model: a Verilator model of neuflow_hdl.hosted.HostedSimTop (the
// board's design: processor, on-chip memory, host link, UART) whose serial
// line is bridged to a TCP socket.  A host tool connects to it as it would to
// the board's USB serial port (pyserial: socket://127.0.0.1:PORT) and sees
// the board: its bytes are shifted onto the design's rx pin bit by bit, and
// the design's tx pin is sampled and reassembled into bytes, 8N1, DIVISOR
// clock cycles a bit.
//
// Build-time constants (-D): DIVISOR, RESET_CYCLES (HostedSimTop.RESET_CYCLES),
// RUNNING_LED (the bit of leds that is lit while the processor runs).
//
// Plusargs:
//   +port=N         TCP port to listen on, on 127.0.0.1 (0: any free port)
//   +max_cycles=N   stop after N cycles (default 2,000,000,000)
//
// Prints {"port": N} once listening; accepts one connection and runs until the
// host closes it; then prints {"cycles": ..., "seconds": ..., "bytes_in": ...,
// "bytes_out": ...}.  While the line and the processor have been quiet for
// QUIET cycles it waits for the host without advancing simulated time, so
// the board's frame timeout counts only the host's pauses the simulation saw.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "Vtop.h"
#include "verilated.h"

#ifndef DIVISOR
#error "DIVISOR must be defined"
#endif
#ifndef RESET_CYCLES
#error "RESET_CYCLES must be defined"
#endif
#ifndef RUNNING_LED
#error "RUNNING_LED must be defined"
#endif

static const uint64_t QUIET = 4096 + 40 * DIVISOR;

// Shifts bytes onto a line: start bit, eight data bits from bit 0, stop bit.
class LineSender {
  public:
    bool busy() const { return bits_ != 0; }
    void start(uint8_t byte) { frame_ = (1u << 9) | (uint32_t(byte) << 1); bits_ = 10; timer_ = DIVISOR; }
    int level() const { return busy() ? int(frame_ & 1) : 1; }
    void tick() {
        if (!busy()) return;
        if (--timer_ == 0) { frame_ >>= 1; bits_--; timer_ = DIVISOR; }
    }

  private:
    uint32_t frame_ = 0;
    unsigned bits_ = 0, timer_ = 0;
};

// Samples a line in the middle of each bit; returns true with a byte at its stop bit.
class LineReceiver {
  public:
    bool busy() const { return phase_ != 0; }
    bool tick(int level, uint8_t& byte) {
        if (phase_ == 0) {
            if (!level) { phase_ = 1; timer_ = DIVISOR / 2; }
            return false;
        }
        if (--timer_ != 0) return false;
        timer_ = DIVISOR;
        if (phase_ == 1) {                  // the start bit's middle
            phase_ = level ? 0 : 2;
            data_ = 0;
            return false;
        }
        if (phase_ < 10) {                  // data bits
            data_ |= uint32_t(level) << (phase_ - 2);
            phase_++;
            return false;
        }
        phase_ = 0;                          // the stop bit
        byte = uint8_t(data_);
        return level != 0;
    }

  private:
    unsigned phase_ = 0, timer_ = 0;
    uint32_t data_ = 0;
};

static uint64_t plusarg_number(VerilatedContext& context, const char* name, uint64_t otherwise) {
    const std::string prefix = std::string(name) + "=";
    const char* match = context.commandArgsPlusMatch(prefix.c_str());
    if (!match || !*match) return otherwise;
    return std::strtoull(match + prefix.size() + 1, nullptr, 10);
}

static int listen_on(uint16_t port, uint16_t& bound) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    const int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 || listen(fd, 1) != 0) {
        close(fd);
        return -1;
    }
    socklen_t length = sizeof address;
    getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
    bound = ntohs(address.sin_port);
    return fd;
}

int main(int argc, char** argv) {
    auto context = std::make_unique<VerilatedContext>();
    context->commandArgs(argc, argv);
    const uint64_t max_cycles = plusarg_number(*context, "max_cycles", 2000000000ull);
    uint16_t port = 0;
    const int server = listen_on(uint16_t(plusarg_number(*context, "port", 0)), port);
    if (server < 0) {
        std::fprintf(stderr, "board model: cannot listen on 127.0.0.1\n");
        return 2;
    }
    std::printf("{\"port\": %u}\n", unsigned(port));
    std::fflush(stdout);
    const int host = accept(server, nullptr, nullptr);
    close(server);
    if (host < 0) {
        std::fprintf(stderr, "board model: accept failed\n");
        return 2;
    }
    const int yes = 1;
    setsockopt(host, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);

    auto top = std::make_unique<Vtop>(context.get());
    LineSender sender;
    LineReceiver receiver;
    std::deque<uint8_t> incoming;
    std::vector<uint8_t> outgoing;
    uint64_t cycles = 0, quiet = 0, line_idle = 0, bytes_in = 0, bytes_out = 0;
    bool open = true;
    const auto started = std::chrono::steady_clock::now();
    top->clk = 0;
    top->rx = 1;
    top->eval();

    auto take_from_host = [&](int wait_ms) {
        pollfd entry{host, POLLIN, 0};
        if (poll(&entry, 1, wait_ms) <= 0) return;
        uint8_t buffer[4096];
        const ssize_t got = recv(host, buffer, sizeof buffer, MSG_DONTWAIT);
        if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            open = false;
            return;
        }
        for (ssize_t n = 0; n < got; n++) incoming.push_back(buffer[n]);
        bytes_in += got > 0 ? got : 0;
    };
    auto give_to_host = [&]() {
        size_t sent = 0;
        while (sent < outgoing.size()) {
            const ssize_t n = send(host, outgoing.data() + sent, outgoing.size() - sent, MSG_NOSIGNAL);
            if (n <= 0) { open = false; break; }
            sent += n;
        }
        outgoing.clear();
    };

    while (open && cycles < max_cycles) {
        if (!sender.busy() && incoming.empty()) take_from_host(0);
        if (!sender.busy() && !incoming.empty()) {
            sender.start(incoming.front());
            incoming.pop_front();
        }
        top->rx = sender.level();
        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
        cycles++;
        sender.tick();
        uint8_t byte;
        if (receiver.tick(top->tx, byte)) {
            outgoing.push_back(byte);
            bytes_out++;
        }
        const bool running = cycles < RESET_CYCLES || ((top->leds >> RUNNING_LED) & 1);
        if (sender.busy() || receiver.busy() || !incoming.empty() || !top->tx || running) {
            quiet = 0;
        } else if (++quiet >= QUIET) {
            if (!outgoing.empty()) give_to_host();
            while (open && incoming.empty()) take_from_host(100);
            quiet = 0;
        }
        // The board's bytes go to the host in bursts: when 256 are waiting, or
        // once its line has been idle for two byte times.
        line_idle = (receiver.busy() || !top->tx) ? 0 : line_idle + 1;
        if (outgoing.size() >= 256 || (!outgoing.empty() && line_idle > 20 * DIVISOR)) give_to_host();
    }
    if (!outgoing.empty() && open) give_to_host();
    close(host);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    top->final();
    std::printf("{\"cycles\": %" PRIu64 ", \"seconds\": %.3f, \"bytes_in\": %" PRIu64 ", \"bytes_out\": %" PRIu64 "}\n",
                cycles, seconds, bytes_in, bytes_out);
    return 0;
}
