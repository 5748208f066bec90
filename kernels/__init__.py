"""Farthest-point sampling kernels: GPU (Triton), CPU (torch/numpy) and a float64 reference, side by side."""
from .fps import DEVICES, farthest_point_sampling, resolve_device
from .selection import METHODS, Selection

__all__ = ["DEVICES", "METHODS", "Selection", "farthest_point_sampling", "resolve_device"]
