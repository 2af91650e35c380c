"""StreamVGGT heads: camera (here), DPT depth/points, track (see their modules)."""
