"""Inference: video in -> per-frame language feature fields, RGB, depth, cameras and point clouds out."""
