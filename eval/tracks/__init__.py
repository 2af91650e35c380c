"""The motion protocols: TAP-Vid point-track metrics (``tapvid.py``), TAPVid-3D's APD (``apd3d.py``),
optical-flow end-point error and moving-mask IoU (``motion.py``), with the zero-motion and ground-truth baselines;
the command is ``python -m eval.tracks`` (``run.py``)."""
