"""Suite-wide settings: one intra-op thread (the small models here run fastest that way, and the
timings stay steady when the machine is shared)."""

import matplotlib
import torch

matplotlib.use("Agg")
torch.set_num_threads(1)
