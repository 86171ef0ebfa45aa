// onebit's stand-in for Vitis HLS' hls_stream.h, for C++ simulation only (hw/check/cppsim.py).
// An unbounded FIFO with the member functions finn-hlslib and FINN's generated cppsim code use; reading an
// empty stream is a simulation error (in hardware it would block forever), reported and fatal.
#ifndef ONEBIT_HLS_STREAM_SHIM_H
#define ONEBIT_HLS_STREAM_SHIM_H

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>

#include "hls_half.h"

namespace hls {

template <typename T, int DEPTH = 0>
class stream {
  public:
    stream() {}
    explicit stream(const char* name) : name_(name) {}
    stream(const stream&) = delete;
    stream& operator=(const stream&) = delete;

    T read() {
        if (fifo_.empty()) {
            std::fprintf(stderr, "hls::stream '%s' read while empty (the design would stall here)\n", name_.c_str());
            std::exit(4);
        }
        T value = fifo_.front();
        fifo_.pop_front();
        return value;
    }
    void read(T& value) { value = read(); }
    bool read_nb(T& value) {
        if (fifo_.empty()) return false;
        value = read();
        return true;
    }
    void write(const T& value) { fifo_.push_back(value); }
    bool write_nb(const T& value) { write(value); return true; }
    void operator>>(T& value) { value = read(); }
    void operator<<(const T& value) { write(value); }
    bool empty() const { return fifo_.empty(); }
    bool full() const { return false; }
    std::size_t size() const { return fifo_.size(); }

  private:
    std::deque<T> fifo_;
    std::string name_;
};

}  // namespace hls

#if __has_include("onebit_unflatten.h")
#include "onebit_unflatten.h"
#endif

#endif
