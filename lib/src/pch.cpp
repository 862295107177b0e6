// Translation unit that only carries the precompiled <torch/torch.h>.
