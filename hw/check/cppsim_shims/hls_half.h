// onebit's stand-in for Vitis HLS' `half` (C++ simulation only, hw/check/cppsim.py): GCC's IEEE binary16
// type. finn-hlslib names `half` in type-punning helpers; the integer nodes of a 1-bit network never
// compute with it.
#ifndef ONEBIT_HLS_HALF_SHIM_H
#define ONEBIT_HLS_HALF_SHIM_H
#ifndef _HLS_HALF_DEFINED_
#define _HLS_HALF_DEFINED_
typedef _Float16 half;
#endif
#endif
