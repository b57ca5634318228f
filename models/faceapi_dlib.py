"""dlib's ResNet-29 face descriptor, from face-api's quantised TensorFlow.js weights to ONNX.

npm `@vladmandic/face-api` ships the network dlib trained (`dlib_face_recognition_resnet_model_v1`,
weights CC0) as `model/face_recognition_model.bin`: the tensors of
`face_recognition_model-weights_manifest.json` back to back, most of them uint8 with a scale
and a minimum per tensor (value = q × scale + min), a few float32. The network is the one in
face-api's `src/faceRecognitionNet/` (FaceRecognitionNet.ts, convLayer.ts, residualLayer.ts):

    150×150 RGB, minus the mean (122.782, 117.001, 104.298), ÷ 255
    conv 7×7 stride 2 (valid) + per-channel scale + ReLU; max-pool 3×3 stride 2
    residual ×3 (32), down + ×3 (64), down + ×2 (128), down + ×2 (256), down (256)
    global average pool; dense 256 → 128

A residual block is conv 3×3 + scale + ReLU, conv 3×3 + scale, plus the input, ReLU. A "down"
block's first conv has stride 2 (valid) and its shortcut is a 2×2 average pool, padded with
zero channels to the new width, and the conv output is padded with a zero row and column when
the pool's output is one larger. Each conv's bias and the scale layer that follows it are
folded into the conv (w·s, b·s + t): the same function, fewer nodes.

The graph takes float32 RGB pixels 0–255 in NCHW, any batch, and does the normalisation
itself, so the adapter and a bare onnxruntime call feed the same aligned crop. Only `numpy`
and `onnx` are used; the result is byte-for-byte the same on every run (checked by its
SHA-256 in manifest.yaml).
"""

from __future__ import annotations

import json

import numpy as np

MEAN_RGB = (122.782, 117.001, 104.298)
INPUT_SIZE = 150
OPSET = 13
IR_VERSION = 8

# (name, kind) in the order of FaceRecognitionNet.forwardInput
BLOCKS = [
    ("conv32_1", "same"), ("conv32_2", "same"), ("conv32_3", "same"),
    ("conv64_down", "down"), ("conv64_1", "same"), ("conv64_2", "same"), ("conv64_3", "same"),
    ("conv128_down", "down"), ("conv128_1", "same"), ("conv128_2", "same"),
    ("conv256_down", "down"), ("conv256_1", "same"), ("conv256_2", "same"),
    ("conv256_down_out", "down"),
]


class ConversionError(Exception):
    """The package's weights are not what the converter expects."""


def dequantise(manifest_json: bytes, weights: bytes) -> dict[str, np.ndarray]:
    """Every tensor of a TensorFlow.js weights manifest, as float32."""
    groups = json.loads(manifest_json)
    out: dict[str, np.ndarray] = {}
    offset = 0
    for group in groups:
        for spec in group["weights"]:
            shape = tuple(spec["shape"])
            count = int(np.prod(shape)) if shape else 1
            quant = spec.get("quantization")
            if quant is None:
                if spec["dtype"] != "float32":
                    raise ConversionError(f"{spec['name']}: unexpected dtype {spec['dtype']}")
                raw = np.frombuffer(weights, np.float32, count, offset)
                offset += 4 * count
                value = raw.astype(np.float32)
            elif quant["dtype"] == "uint8":
                raw8 = np.frombuffer(weights, np.uint8, count, offset)
                offset += count
                value = (raw8.astype(np.float64) * quant["scale"] + quant["min"]).astype(
                    np.float32
                )
            else:
                raise ConversionError(f"{spec['name']}: unexpected quantisation {quant['dtype']}")
            out[spec["name"]] = value.reshape(shape)
    if offset != len(weights):
        raise ConversionError(f"weights file has {len(weights)} bytes, the manifest {offset}")
    return out


def convert(manifest_json: bytes, weights: bytes) -> bytes:
    """The ONNX model (serialised) for face-api's face recognition weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = dequantise(manifest_json, weights)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    counter = [0]

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def fresh(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def conv(x: str, prefix: str, stride: int, pads: int, relu: bool) -> str:
        filters = w[f"{prefix}/conv/filters"]  # (kh, kw, in, out)
        bias = w[f"{prefix}/conv/bias"]
        scale, shift = w[f"{prefix}/scale/weights"], w[f"{prefix}/scale/biases"]
        kernel = (filters * scale).transpose(3, 2, 0, 1)  # OIHW, scale folded in
        out = fresh(prefix.replace("/", "_"))
        nodes.append(helper.make_node(
            "Conv", [x, const(f"{prefix}/W", kernel), const(f"{prefix}/B", bias * scale + shift)],
            [out], kernel_shape=list(kernel.shape[2:]), strides=[stride, stride],
            pads=[pads] * 4,
        ))
        if not relu:
            return out
        act = fresh("relu")
        nodes.append(helper.make_node("Relu", [out], [act]))
        return act

    def pad(x: str, pads: list[int]) -> str:
        out = fresh("pad")
        name = const(f"pads_{counter[0]}", np.array(pads, np.int64))
        nodes.append(helper.make_node("Pad", [x, name], [out], mode="constant"))
        return out

    # Normalise inside the graph: (x - mean) / 255.
    mean = np.array(MEAN_RGB, np.float32).reshape(1, 3, 1, 1)
    nodes.append(helper.make_node("Sub", ["input", const("mean", mean)], ["centred"]))
    nodes.append(helper.make_node(
        "Div", ["centred", const("divisor", np.array(255.0, np.float32))], ["normalised"]
    ))
    x = conv("normalised", "conv32_down", 2, 0, relu=True)
    size = (INPUT_SIZE - 7) // 2 + 1
    pooled = fresh("maxpool")
    nodes.append(helper.make_node("MaxPool", [x], [pooled], kernel_shape=[3, 3], strides=[2, 2]))
    x, size, channels = pooled, (size - 3) // 2 + 1, 32
    for name, kind in BLOCKS:
        if kind == "same":
            y = conv(x, f"{name}/conv1", 1, 1, relu=True)
            y = conv(y, f"{name}/conv2", 1, 1, relu=False)
            shortcut = x
        else:
            y = conv(x, f"{name}/conv1", 2, 0, relu=True)
            y = conv(y, f"{name}/conv2", 1, 1, relu=False)
            conv_size, pool_size = (size - 3) // 2 + 1, size // 2
            shortcut = fresh("avgpool")
            nodes.append(helper.make_node("AveragePool", [x], [shortcut], kernel_shape=[2, 2],
                                          strides=[2, 2]))
            if pool_size != conv_size:  # a zero row at the bottom and column at the right
                y = pad(y, [0, 0, 0, 0, 0, 0, pool_size - conv_size, pool_size - conv_size])
            out_channels = w[f"{name}/conv1/conv/filters"].shape[3]
            if out_channels != channels:  # zero channels after the pooled ones
                shortcut = pad(shortcut, [0, 0, 0, 0, 0, out_channels - channels, 0, 0])
            size, channels = pool_size, out_channels
        added = fresh("add")
        nodes.append(helper.make_node("Add", [y, shortcut], [added]))
        x = fresh("relu")
        nodes.append(helper.make_node("Relu", [added], [x]))
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["features"], axis=1))
    nodes.append(helper.make_node("MatMul", ["features", const("fc", w["fc"])], ["embedding"]))
    graph = helper.make_graph(
        nodes, "dlib_resnet29_face_descriptor",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                       ["batch", 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 128])],
        inits,
    )
    model = helper.make_model(
        graph, producer_name="shouwang models/faceapi_dlib.py", producer_version="1",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString(deterministic=True)
    return data
