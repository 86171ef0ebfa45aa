"""The verification levels of a build and `onebit validate`.

verify.py runs every level on the same test images and compares integer scores with the collapsed model
(pytorch_trained .. finn_hw_layers, accel_model); accel_model.py is the bit-exact numpy model of the
folded accelerator; validate.py is the one-command validation of a build folder (board or model). A new
level is one module here that returns integer scores (and per-node rows) for the same inputs, and is
named in verify.LEVELS; levels that execute hardware code (rtl_nodes.py: FINN's RTL nodes in Verilator,
cppsim.py: FINN's C++ simulation, rtl_accelerator.py: onebit's whole RTL accelerator) follow the interface in
levels.py and are named in levels.LEVEL_MODULES. verdict.py is the one rule both commands judge by
(reference: the collapsed model; the trained model's near-ties are collapse drift, reported apart; every
other level passes, fails - mismatches or an error running it - or is skipped for a missing tool); finished.py
refuses unfinished or changed builds, generated hardware included. Table of levels: docs/verification.md.
"""
