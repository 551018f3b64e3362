"""`CostEstimate`: what a request would cost, as a dry run (HTTP 269) answers it; nothing is spent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class CostEstimate:
    """The answer to a dry run (HTTP 269): what a request would cost, with nothing spent."""

    creative_units: float
    discount: float = 0.0
    details: dict = field(default_factory=dict)
    model_id: str = ""
    inputs: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, data: dict, model_id: str = "", inputs: Optional[dict] = None) -> "CostEstimate":
        return cls(float(data.get("creativeUnitsCost") or 0), float(data.get("creativeUnitsDiscount") or 0),
                   dict(data.get("costDetails") or {}), model_id, dict(inputs or {}))

    def __str__(self) -> str:
        details = ", ".join(f"{k} {v:g}" for k, v in self.details.items())
        return f"{self.creative_units:g} CU" + (f" ({details})" if details else "")

    def __repr__(self) -> str:
        return f"<CostEstimate {self}>"

    def _repr_markdown_(self) -> str:
        return f"**Estimated cost:** {self} — dry run, nothing was spent."
