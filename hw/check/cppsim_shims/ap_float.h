// onebit's stand-in for Vitis HLS' ap_float.h (C++ simulation only, hw/check/cppsim.py): the declaration
// finn-hlslib's flatten.hpp names in a template it never instantiates for integer networks. Any use of
// its members in a simulation is a compile error, by design.
#ifndef ONEBIT_AP_FLOAT_SHIM_H
#define ONEBIT_AP_FLOAT_SHIM_H
#include <ap_int.h>
#include "hls_half.h"

template <int W, int E>
class ap_float {
  public:
    ap_uint<1> sign_ref() const;
    ap_uint<E> exponent_ref() const;
    ap_uint<W - E - 1> mantissa_ref() const;
};
#endif
