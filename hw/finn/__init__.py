"""Everything that drives finn-plus: environment and workarounds (env.py), fixes to its custom ops
(fixes.py), the build steps and their order (build.py), folding from a file / target FPS (folding.py)
and to a board's budget, I/O-aware (autofold/), and the accelerator's I/O description (io_description.py).

A new FINN builder step goes into build.py (or a module here if it is more than a short graph edit);
`import finn` inside this package is finn-plus itself (absolute imports), never this folder.
"""
