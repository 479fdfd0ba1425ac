"""Argument checks shared by the exercise checks of chapters 06–11 (private)."""

from __future__ import annotations

from ..checks import check_positive_int
from ..network import LayeredEBM


def check_net(net: object) -> LayeredEBM:
    """``net`` must be a :class:`ebmlib.LayeredEBM`."""
    if not isinstance(net, LayeredEBM):
        raise TypeError(f"net: expected an ebmlib.LayeredEBM, got {type(net).__name__}")
    return net


def check_layer(layer: object, net: LayeredEBM) -> int:
    """``layer`` must be a hidden or output layer index, 1 … N."""
    layer = check_positive_int("layer", layer)
    if layer > net.N:
        raise ValueError(f"layer: expected 1 … {net.N} (the network's layers), got {layer}")
    return layer


def check_state(name: str, h: object, net: LayeredEBM) -> list:
    """``h`` must be a state ``[x, h_1, …, h_N]`` of ``net``."""
    if not isinstance(h, (list, tuple)) or len(h) != net.N + 1:
        raise TypeError(f"{name}: expected a state [x, h_1, …, h_{net.N}] (a list of {net.N + 1} tensors), "
                        f"got {type(h).__name__}")
    return list(h)
