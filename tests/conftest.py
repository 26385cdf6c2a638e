"""Suite-wide settings: one torch thread (the tests use tiny tensors, where threads only add overhead)."""

from __future__ import annotations

import matplotlib
import torch

matplotlib.use("Agg")
torch.set_num_threads(1)
