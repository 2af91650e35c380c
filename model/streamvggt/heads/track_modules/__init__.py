"""Point-tracking modules of the StreamVGGT track head (correlation pyramid, update transformer, predictor)."""
