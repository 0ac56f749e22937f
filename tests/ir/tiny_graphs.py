"""Builds tiny IR graphs inline for the analysis and fusion tests (no ONNX involved)."""

from __future__ import annotations

from typing import Any

from cosched.ir.graph import Graph, Op, TenantInfo, TensorInfo, WeightRef, frozen_mapping, qualify


class GraphBuilder:
    """Declare inputs, weights and ops per tenant; ``build`` returns a verified Graph."""

    def __init__(self) -> None:
        self.tensors: dict[str, TensorInfo] = {}
        self.weights: dict[str, WeightRef] = {}
        self.ops: list[Op] = []
        self.inputs: dict[str, list[str]] = {}
        self.count = 0

    def _tensor(self, tenant: str, name: str, shape: tuple[int, ...], kind: str, dtype: str) -> str:
        full = qualify(tenant, name)
        self.tensors[full] = TensorInfo(full, tuple(shape), dtype, tenant, kind)  # type: ignore[arg-type]
        self.inputs.setdefault(tenant, [])
        return full

    def input(self, tenant: str, name: str, shape: tuple[int, ...], dtype: str = "float32") -> str:
        full = self._tensor(tenant, name, shape, "input", dtype)
        self.inputs[tenant].append(full)
        return full

    def weight(self, tenant: str, name: str, shape: tuple[int, ...], dtype: str = "float32") -> str:
        full = self._tensor(tenant, name, shape, "weight", dtype)
        self.weights[full] = WeightRef(tenant, name)
        return full

    def op(
        self, tenant: str, op_type: str, inputs: list[str], shape: tuple[int, ...],
        name: str | None = None, dtype: str = "float32", n_out: int = 1, **attrs: Any,
    ) -> str:
        """Adds an op; returns the name of its (first) output, of shape ``shape``."""
        name = name or f"{op_type}_{self.count}"
        self.count += 1
        outs = tuple(
            self._tensor(tenant, f"{name}_out{k}", shape, "activation", dtype) for k in range(n_out)
        )
        self.ops.append(Op(qualify(tenant, name), op_type, tenant, tuple(inputs), outs, frozen_mapping(attrs)))
        return outs[0]

    def build(self, outputs: dict[str, list[str]]) -> Graph:
        tenants = tuple(
            TenantInfo(
                name=t, source=None, sha256="0" * 64, opsets=frozen_mapping({"": 18}),
                inputs=tuple((n.split("/", 1)[1], n) for n in ins),
                outputs=tuple((n.split("/", 1)[1], n) for n in outputs.get(t, [])),
            )
            for t, ins in self.inputs.items()
        )
        return Graph(
            tenants=tenants, ops=tuple(self.ops), tensors=frozen_mapping(self.tensors),
            weights=frozen_mapping(self.weights),
        ).verify()
