// onebit's unflatten() for finn-hlslib snapshots that lack it (hw/check/cppsim.py adds this header to the
// simulation include folder only then): splits a packed ap_uint into N equal-width elements, element 0 in
// the least significant bits (the inverse of finn-hlslib's flatten()), as FINN's npy2apintstream.hpp expects.
#ifndef ONEBIT_UNFLATTEN_H
#define ONEBIT_UNFLATTEN_H

#include <cstddef>
#include <ap_int.h>

template <typename T, std::size_t N, int W>
void unflatten(T (&buffer)[N], ap_uint<W> const& packed) {
    constexpr int element_bits = W / static_cast<int>(N);
    static_assert(element_bits * static_cast<int>(N) == W, "packed width is not N elements wide");
    for (std::size_t i = 0; i < N; ++i) {
        buffer[i](element_bits - 1, 0) = packed(element_bits * (i + 1) - 1, element_bits * i);
    }
}

#endif
