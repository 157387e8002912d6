"""Built-in catalog of common AWS EC2 instance types, so a node pool may name only its instance type.

Source and date: shapes (vCPU, memory, GPUs, GPU memory) are AWS's published instance specifications
(aws.amazon.com/ec2/instance-types, m5/c5/r5/g4dn/g5/p3 pages). Prices are **approximate public list
prices, Linux on-demand in us-east-1 (N. Virginia), as of 2024**, from the EC2 on-demand pricing page;
AWS changes them rarely but does change them, and other regions differ. The anchor checks out: 200
g4dn.xlarge at $0.526/h = $105.20/h, the figure in Cortex's account of serving 1,000 GPU models.

Spot discounts are **typical, approximate** savings off on-demand for each family (AWS Spot Instance
Advisor bands, us-east-1, 2024), not prices: real spot prices vary by zone and hour. A pool that knows
better sets ``price_spot`` or ``spot_discount`` in the cluster file; every catalog value can be overridden
there.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

GIB = 2**30

CATALOG_SOURCE = "AWS EC2 instance specifications and us-east-1 Linux on-demand list prices (approximate, 2024)"
CATALOG_DATE = "2024"


@dataclass(frozen=True, slots=True)
class InstanceType:
    name: str
    vcpu: int
    mem_bytes: int
    gpus: int
    gpu_model: str  # "" without GPUs
    gpu_mem_bytes: int  # per GPU
    price_on_demand: float  # USD per hour, us-east-1, Linux
    spot_discount: float  # typical fraction off on-demand (0.6 = spot costs 40% of on-demand)

    @property
    def price_spot(self) -> float:
        return round(self.price_on_demand * (1.0 - self.spot_discount), 4)


# Typical spot discount per family (approximate, see the module docstring).
_SPOT_DISCOUNT = {"m5": 0.60, "c5": 0.60, "r5": 0.65, "g4dn": 0.65, "g5": 0.60, "p3": 0.70}

# (name, vCPU, memory GiB, GPUs, GPU model, GPU memory GiB per GPU, on-demand USD/h)
_ROWS: tuple[tuple[str, int, float, int, str, int, float], ...] = (
    ("m5.large", 2, 8, 0, "", 0, 0.096),
    ("m5.xlarge", 4, 16, 0, "", 0, 0.192),
    ("m5.2xlarge", 8, 32, 0, "", 0, 0.384),
    ("m5.4xlarge", 16, 64, 0, "", 0, 0.768),
    ("m5.8xlarge", 32, 128, 0, "", 0, 1.536),
    ("m5.12xlarge", 48, 192, 0, "", 0, 2.304),
    ("m5.16xlarge", 64, 256, 0, "", 0, 3.072),
    ("m5.24xlarge", 96, 384, 0, "", 0, 4.608),
    ("c5.large", 2, 4, 0, "", 0, 0.085),
    ("c5.xlarge", 4, 8, 0, "", 0, 0.17),
    ("c5.2xlarge", 8, 16, 0, "", 0, 0.34),
    ("c5.4xlarge", 16, 32, 0, "", 0, 0.68),
    ("c5.9xlarge", 36, 72, 0, "", 0, 1.53),
    ("c5.12xlarge", 48, 96, 0, "", 0, 2.04),
    ("c5.18xlarge", 72, 144, 0, "", 0, 3.06),
    ("c5.24xlarge", 96, 192, 0, "", 0, 4.08),
    ("r5.large", 2, 16, 0, "", 0, 0.126),
    ("r5.xlarge", 4, 32, 0, "", 0, 0.252),
    ("r5.2xlarge", 8, 64, 0, "", 0, 0.504),
    ("r5.4xlarge", 16, 128, 0, "", 0, 1.008),
    ("r5.8xlarge", 32, 256, 0, "", 0, 2.016),
    ("r5.12xlarge", 48, 384, 0, "", 0, 3.024),
    ("r5.16xlarge", 64, 512, 0, "", 0, 4.032),
    ("r5.24xlarge", 96, 768, 0, "", 0, 6.048),
    ("g4dn.xlarge", 4, 16, 1, "T4", 16, 0.526),
    ("g4dn.2xlarge", 8, 32, 1, "T4", 16, 0.752),
    ("g4dn.4xlarge", 16, 64, 1, "T4", 16, 1.204),
    ("g4dn.8xlarge", 32, 128, 1, "T4", 16, 2.176),
    ("g4dn.12xlarge", 48, 192, 4, "T4", 16, 3.912),
    ("g4dn.16xlarge", 64, 256, 1, "T4", 16, 4.352),
    ("g5.xlarge", 4, 16, 1, "A10G", 24, 1.006),
    ("g5.2xlarge", 8, 32, 1, "A10G", 24, 1.212),
    ("g5.4xlarge", 16, 64, 1, "A10G", 24, 1.624),
    ("g5.8xlarge", 32, 128, 1, "A10G", 24, 2.448),
    ("g5.12xlarge", 48, 192, 4, "A10G", 24, 5.672),
    ("g5.16xlarge", 64, 256, 1, "A10G", 24, 4.096),
    ("g5.24xlarge", 96, 384, 4, "A10G", 24, 8.144),
    ("g5.48xlarge", 192, 768, 8, "A10G", 24, 16.288),
    ("p3.2xlarge", 8, 61, 1, "V100", 16, 3.06),
    ("p3.8xlarge", 32, 244, 4, "V100", 16, 12.24),
    ("p3.16xlarge", 64, 488, 8, "V100", 16, 24.48),
)

INSTANCE_TYPES: dict[str, InstanceType] = {
    name: InstanceType(
        name=name,
        vcpu=vcpu,
        mem_bytes=int(mem_gib * GIB),
        gpus=gpus,
        gpu_model=model,
        gpu_mem_bytes=gpu_gib * GIB,
        price_on_demand=price,
        spot_discount=_SPOT_DISCOUNT[name.split(".", 1)[0]],
    )
    for name, vcpu, mem_gib, gpus, model, gpu_gib, price in _ROWS
}


def lookup(name: str) -> InstanceType | None:
    """The catalog entry of an instance type (case-insensitive), or None."""
    return INSTANCE_TYPES.get(name.strip().lower())


def close_matches(name: str, limit: int = 3) -> list[str]:
    """Catalog names that look like ``name``: for "did you mean" in config errors."""
    wanted = name.strip().lower()
    found = difflib.get_close_matches(wanted, INSTANCE_TYPES, n=limit, cutoff=0.6)
    if not found and "." in wanted:
        family = wanted.split(".", 1)[0]
        found = [n for n in INSTANCE_TYPES if n.startswith(family + ".")][:limit]
    return found
