"""Training of the Semantic Bridging Decoder: dataset, loss, schedule, checkpoints, distributed plumbing."""
