"""The built-in instance catalog: the families the cluster file relies on, sane shapes and prices, lookups."""

from __future__ import annotations

import pytest

from thrifty.catalog import CATALOG_DATE, CATALOG_SOURCE, INSTANCE_TYPES, close_matches, lookup

GI = 2**30


@pytest.mark.parametrize("family", ["m5", "c5", "r5", "g4dn", "g5", "p3"])
def test_every_required_family_is_there(family: str) -> None:
    assert any(name.startswith(family + ".") for name in INSTANCE_TYPES)


@pytest.mark.parametrize(
    ("name", "vcpu", "mem_gib", "gpus", "gpu_mem_gib", "price"),
    [
        ("m5.large", 2, 8, 0, 0, 0.096),
        ("c5.xlarge", 4, 8, 0, 0, 0.17),
        ("r5.large", 2, 16, 0, 0, 0.126),
        ("g4dn.xlarge", 4, 16, 1, 16, 0.526),  # Cortex's anchor: 200 of them = $105.20/h
        ("g5.xlarge", 4, 16, 1, 24, 1.006),
        ("p3.2xlarge", 8, 61, 1, 16, 3.06),
        ("g4dn.12xlarge", 48, 192, 4, 16, 3.912),
    ],
)
def test_known_shapes_and_prices(name: str, vcpu: int, mem_gib: int, gpus: int, gpu_mem_gib: int, price: float) -> None:
    it = lookup(name)
    assert it is not None
    assert (it.vcpu, it.mem_bytes, it.gpus, it.gpu_mem_bytes, it.price_on_demand) == (
        vcpu, mem_gib * GI, gpus, gpu_mem_gib * GI, price,
    )  # fmt: skip


def test_every_entry_is_consistent() -> None:
    for name, it in INSTANCE_TYPES.items():
        assert it.name == name
        assert it.vcpu > 0 and it.mem_bytes > 0 and it.price_on_demand > 0
        assert (it.gpus > 0) == (it.gpu_mem_bytes > 0) == (it.gpu_model != "")
        assert 0.3 <= it.spot_discount <= 0.9
        assert 0 < it.price_spot < it.price_on_demand


def test_prices_grow_with_size_within_a_family() -> None:
    for family in ("m5", "c5", "r5"):
        rows = sorted((it.vcpu, it.price_on_demand) for it in INSTANCE_TYPES.values() if it.name.startswith(family))
        prices = [p for _, p in rows]
        assert prices == sorted(prices)


def test_lookup_is_case_insensitive_and_close_matches_help_typos() -> None:
    assert lookup(" G4DN.XLARGE ") is lookup("g4dn.xlarge")
    assert lookup("g4dn.huge") is None
    assert close_matches("g4dn.xlarg")[0] == "g4dn.xlarge"
    assert close_matches("m5.hugeish")  # falls back to the family
    assert close_matches("zzz") == []


def test_the_source_and_date_are_stated() -> None:
    assert "us-east-1" in CATALOG_SOURCE and "approximate" in CATALOG_SOURCE
    assert CATALOG_DATE
