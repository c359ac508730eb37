"""hone: fine-tune, evaluate and ship language models, honestly measured against their base."""

import os

__version__ = "0.1.0"

# transformers (5.25 and later) otherwise swaps layers' forward for code downloaded from the
# hub ("kernels") and swaps it again on every model.train()/eval(): network access nobody
# asked for, and forwards hone's engine did not install. Set USE_HUB_KERNELS=1 to opt in.
os.environ.setdefault("USE_HUB_KERNELS", "0")
