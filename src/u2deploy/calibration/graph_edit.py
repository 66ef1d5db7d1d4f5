"""What every graph rewrite here needs: attribute lookup, initializer values and collision-free names."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class GraphEdit:
    """Initializer lookup and fresh names (no initializer, node, tensor or value_info has them) for one graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.init = {i.name: i for i in self.graph.initializer}
        self.names = set(self.init) | {n.name for n in self.graph.node} | {
            o for n in self.graph.node for o in n.output} | {i.name for i in self.graph.input} | {
            v.name for v in self.graph.value_info}

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def value(self, name: str) -> np.ndarray | None:
        return numpy_helper.to_array(self.init[name]) if name in self.init else None

    def add_initializer(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        self.init[name] = self.graph.initializer[-1]
        return name
