"""hone: fine-tune, evaluate and ship language models, honestly measured against their base."""

import os as _os

# On CPU, oneDNN (and PyTorch's ideep layer over it) builds and caches a kernel for every
# matrix-product shape it meets, 1024 of each by default. Packed rows change length every
# step, so a run fills both caches: measured +170 MB of resident memory on the benchmark
# model, and about 0.5 MB per cached shape in a sweep. A cap of 64 kept the speed (16 did
# not: kernels were rebuilt every row). oneDNN reads these when it first runs, so they
# take effect as long as hone is imported before any bf16 matrix product; a value the user
# set wins.
for _name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
    _os.environ.setdefault(_name, "64")

__version__ = "0.1.0"
