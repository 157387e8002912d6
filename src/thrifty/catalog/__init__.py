"""Instance types a node pool can name: shapes, prices and typical spot discounts (source and date in ``aws``)."""

from thrifty.catalog.aws import CATALOG_DATE, CATALOG_SOURCE, INSTANCE_TYPES, InstanceType, close_matches, lookup

__all__ = ["CATALOG_DATE", "CATALOG_SOURCE", "INSTANCE_TYPES", "InstanceType", "close_matches", "lookup"]
