import os
import sys

import kernels  # noqa: F401  (selects the Triton interpreter on GPU-less machines before any kernel is defined)

sys.path.insert(0, os.path.dirname(__file__))
