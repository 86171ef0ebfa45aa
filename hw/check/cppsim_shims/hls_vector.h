// onebit's stand-in for Vitis HLS' hls_vector.h (C++ simulation only, hw/check/cppsim.py): a fixed-size
// array with element access, as FINN's npy2vectorstream.hpp and finn-hlslib use it.
#ifndef ONEBIT_HLS_VECTOR_SHIM_H
#define ONEBIT_HLS_VECTOR_SHIM_H

#include <array>
#include <cstddef>

namespace hls {

template <typename T, std::size_t N>
class vector {
  public:
    vector() : data_{} {}
    explicit vector(const T& value) { data_.fill(value); }
    T& operator[](std::size_t i) { return data_[i]; }
    const T& operator[](std::size_t i) const { return data_[i]; }
    static constexpr std::size_t size() { return N; }
    T* begin() { return data_.data(); }
    T* end() { return data_.data() + N; }
    const T* begin() const { return data_.data(); }
    const T* end() const { return data_.data() + N; }

  private:
    std::array<T, N> data_;
};

}  // namespace hls

#endif
