// onebit's front for the open ap_int headers (C++ simulation only, hw/check/cppsim.py): Vitis HLS' ap_int.h
// also declares `half`, which FINN's cnpy.h relies on; the open headers (linked at onebit_ap_types/) do not.
#ifndef ONEBIT_AP_INT_FRONT_H
#define ONEBIT_AP_INT_FRONT_H
#include "hls_half.h"
#include "onebit_ap_types/ap_int.h"
#endif
