"""The schema a Dataset reports (Ray's `Schema`): names, types and the Arrow schema."""

from __future__ import annotations

import pyarrow as pa


class Schema:
    def __init__(self, base_schema: pa.Schema) -> None:
        self.base_schema = base_schema

    @property
    def names(self) -> list[str]:
        return list(self.base_schema.names)

    @property
    def types(self) -> list[pa.DataType]:
        return list(self.base_schema.types)

    def __len__(self) -> int:
        return len(self.base_schema)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schema) and other.base_schema.equals(self.base_schema)

    def __hash__(self) -> int:
        return hash(tuple(self.names))

    def __repr__(self) -> str:
        names = ["Column", "------", *self.names]
        types = ["Type", "----", *(str(t) for t in self.types)]
        width = max(len(n) for n in names)
        return "\n".join(f"{n:<{width}}  {t}" for n, t in zip(names, types, strict=True))
