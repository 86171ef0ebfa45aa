// onebit's stand-in for Vitis HLS' ap_axi_sdata.h (C++ simulation only, hw/check/cppsim.py): the QDMA
// stream word finn-hlslib's streamtools.h names in two functions FINN's node code never calls.
#ifndef ONEBIT_AP_AXI_SDATA_SHIM_H
#define ONEBIT_AP_AXI_SDATA_SHIM_H
#include <ap_int.h>

template <int D, int U, int TI, int TD>
struct qdma_axis {
    ap_uint<D> data;
    ap_uint<(D + 7) / 8> keep;
    ap_uint<1> last;
    ap_uint<D> get_data() const { return data; }
    ap_uint<(D + 7) / 8> get_keep() const { return keep; }
    ap_uint<1> get_last() const { return last; }
    void set_data(ap_uint<D> d) { data = d; }
    void set_keep(ap_uint<(D + 7) / 8> k) { keep = k; }
    void set_last(ap_uint<1> l) { last = l; }
};
#endif
