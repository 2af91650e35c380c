"""Following points through time: the tracks format (``format.py``), the weight-free OpenCV tracker (``lk.py``),
dense flow (``flow.py``), 3D lifting with depth and cameras (``lift.py``), moving-object masks (``motion.py``) and
the StreamVGGT track head on cached tokens (``head.py``). The command is ``python -m inference.track``."""
