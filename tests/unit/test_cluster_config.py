"""The cluster file: schema, catalog fill-in, located errors, `thrifty validate` / `thrifty schema --cluster`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from thrifty.cli.main import cli
from thrifty.config.cluster import ClusterConfig, ProviderName, looks_like_cluster_file
from thrifty.config.loader import load_cluster, parse_cluster_text, parse_text
from thrifty.errors import ConfigError

GI = 2**30

DESIGN_EXAMPLE = """\
engine: ray
provider: simulated
node_idle_timeout: 5m
node_pools:
  - {name: cpu, instance_type: m5.large, spot: true, max_nodes: 20}
  - {name: gpu, instance_type: g4dn.xlarge, spot: true, max_nodes: 10}
  - {name: gpu-od, instance_type: g4dn.xlarge, max_nodes: 4, priority: 1}
spot: {on_demand_base_capacity: 0, on_demand_percentage_above_base_capacity: 0, on_demand_backup: true}
"""


def test_design_example_fills_pools_from_the_catalog() -> None:
    c = parse_cluster_text(DESIGN_EXAMPLE, "cluster.yaml")
    assert c.engine == "ray" and c.provider is ProviderName.SIMULATED
    assert c.node_idle_timeout == 300.0
    assert c.launch_delay_s == 5.0
    cpu, gpu, gpu_od = c.pools()
    assert (cpu.spec.cpu, cpu.spec.mem_bytes, cpu.spec.gpus) == (2.0, 8 * GI, 0)
    assert cpu.spec.price_on_demand_per_hour == 0.096
    assert cpu.spec.price_per_hour == pytest.approx(0.096 * 0.4)
    assert (gpu.spec.gpus, gpu.spec.gpu_mem_bytes, gpu.spec.spot) == (1, 16 * GI, True)
    assert gpu_od.spec.price_per_hour == 0.526 and not gpu_od.spec.spot
    assert (gpu_od.max_nodes, gpu_od.priority) == (4, 1)
    assert c.spot.notice_handling == "drain"


def test_pool_values_override_the_catalog() -> None:
    text = """\
provider: simulated
node_pools:
  - {name: small-gpu, instance_type: g4dn.xlarge, cpu: 2, mem: 4Gi, spot: true, price_spot: 0.2}
  - {name: custom, cpu: 500m, mem: 1Gi, gpu: 2, gpu_mem: 8Gi, price_on_demand: 1.5, spot: true, spot_discount: 0.5}
"""
    a, b = parse_cluster_text(text, "c.yaml").pools()
    assert (a.spec.cpu, a.spec.mem_bytes, a.spec.gpus, a.spec.price_per_hour) == (2.0, 4 * GI, 1, 0.2)
    assert a.spec.instance_type == "g4dn.xlarge"
    assert (b.spec.instance_type, b.spec.cpu, b.spec.gpus, b.spec.gpu_mem_bytes) == ("custom", 0.5, 2, 8 * GI)
    assert b.spec.price_per_hour == pytest.approx(0.75)


def test_defaults_run_locally() -> None:
    c = ClusterConfig()
    assert (c.engine, c.provider, c.node_pools) == ("local", ProviderName.LOCAL, [])


P = "provider: simulated\nnode_pools:\n"
ERROR_CASES = [
    # (case, text, path, value, line, fragment)
    ("unknown engine", "engine: kubernetes\n", "engine", "kubernetes", 1, "'local' or 'ray'"),
    ("aws is reserved", "provider: aws\n", "provider", "aws", 1, "reserved for a later release"),
    ("unknown field", "nodes: 3\n", "nodes", 3, 1, "unknown field"),
    ("bad duration", "node_idle_timeout: soon\n", "node_idle_timeout", "soon", 1, "not a duration"),
    ("typo in an instance type", P + "  - name: gpu\n    instance_type: g4dn.xlarg\n", "node_pools[0].instance_type",
     "g4dn.xlarg", 4, "did you mean g4dn.xlarge"),
    ("custom pool without a price", P + "  - {name: x, cpu: 2, mem: 1Gi}\n", "node_pools[0]", None, 3,
     "must set price_on_demand"),
    ("spot price on an on-demand pool", P + "  - {name: x, instance_type: m5.large, price_spot: 0.1}\n",
     "node_pools[0]", None, 3, "spot pools only"),
    ("min above max", P + "  - {name: x, instance_type: m5.large, min_nodes: 3, max_nodes: 2}\n", "node_pools[0]",
     None, 3, "min_nodes (3) is above max_nodes (2)"),
    ("bad pool name", P + "  - {name: GPU, instance_type: m5.large}\n", "node_pools[0].name", "GPU", 3, "must match"),
    ("duplicate pool", P + "  - {name: a, instance_type: m5.large}\n  - {name: a, instance_type: c5.large}\n",
     "node_pools", None, 2, "more than once"),
    ("gpu without gpu_mem", P + "  - {name: x, cpu: 2, mem: 1Gi, price_on_demand: 1, gpu: 1}\n", "node_pools[0]",
     None, 3, "must set gpu_mem"),
    ("bad discount", P + "  - {name: x, instance_type: m5.large, spot: true, spot_discount: 1.5}\n",
     "node_pools[0].spot_discount", 1.5, 3, "less than 1"),
    ("pools on the local provider", "node_pools:\n  - {name: a, instance_type: m5.large}\n", "(top level)", None,
     None, "provider local has no node pools"),
    ("simulated without pools", "provider: simulated\n", "(top level)", None, None, "at least one entry"),
    ("address without ray", "address: 127.0.0.1:6379\n", "(top level)", None, None, "engine: ray only"),
    ("bad notice handling", "spot: {notice_handling: pray}\n", "spot.notice_handling", "pray", 1,
     "'drain' or 'ignore'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "text", "path", "value", "line", "fragment"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES]
)
def test_bad_cluster_files_name_file_line_path_and_value(
    case: str, text: str, path: str, value: object, line: int | None, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_cluster_text(text, "my/cluster.yaml")
    problems = info.value.details["problems"]
    match = [p for p in problems if p["path"] == path]
    assert match, problems
    assert fragment in match[0]["message"]
    if value is not None:
        assert match[0]["value"] == value
    if line is not None:
        assert match[0]["line"] == line
        assert f"my/cluster.yaml:{line}:" in info.value.message
    assert "problem" in info.value.message and "cluster file" in info.value.message


def test_a_cluster_file_is_bounded_like_a_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THRIFTY_MAX_CONFIG_BYTES", "100")
    with pytest.raises(ConfigError, match="limit"):
        parse_cluster_text(DESIGN_EXAMPLE, "c.yaml")


def test_project_compute_gains_gpu_mem_node_pool_and_spot() -> None:
    text = "apis:\n  - name: a\n    compute: {gpu: 0.25, gpu_mem: 4Gi, node_pool: gpu, spot: require}\n"
    c = parse_text(text, "t.yaml").apis[0].compute
    assert (c.gpu, c.gpu_mem, c.node_pool, c.spot) == (0.25, 4 * GI, ["gpu"], "require")
    default = parse_text("apis:\n  - name: a\n", "t.yaml").apis[0].compute
    assert (default.gpu_mem, default.node_pool, default.spot) == (None, None, "prefer")


@pytest.mark.parametrize(
    ("compute", "path", "fragment"),
    [
        ("{gpu_mem: 4Gi}", "apis[0].compute", "gpu is 0"),
        ("{spot: sometimes}", "apis[0].compute.spot", "'prefer', 'require' or 'never'"),
        ("{node_pool: [GPU]}", "apis[0].compute.node_pool", "not a pool name"),
        ("{node_pool: []}", "apis[0].compute.node_pool", "at least one pool"),
    ],
)
def test_project_compute_errors(compute: str, path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_text(f"apis:\n  - name: a\n    compute: {compute}\n", "t.yaml")
    match = [p for p in info.value.details["problems"] if p["path"] == path]
    assert match and fragment in match[0]["message"], info.value.details


@pytest.mark.parametrize(
    ("data", "is_cluster"),
    [
        ({"engine": "ray"}, True),
        ({"node_pools": []}, True),
        ({"apis": [], "cluster": {}}, False),
        ({"apis": [], "engine": "ray"}, False),
        ({"splitters": []}, False),
        ({"bogus": 1}, False),
        ([1, 2], False),
    ],
)
def test_cluster_files_are_told_apart_by_their_top_level_keys(data: object, is_cluster: bool) -> None:
    assert looks_like_cluster_file(data) is is_cluster


def test_validate_detects_a_cluster_file(tmp_path: Path) -> None:
    f = tmp_path / "cluster.yaml"
    f.write_text(DESIGN_EXAMPLE)
    out = CliRunner().invoke(cli, ["validate", str(f)])
    assert out.exit_code == 0, out.output
    assert "valid cluster file (engine ray, provider simulated, 3 pools)" in out.output
    assert "g4dn.xlarge" in out.output and "$0.5260" in out.output
    out = CliRunner().invoke(cli, ["validate", "--cluster", str(f), "-o", "json"])
    doc = json.loads(out.output)
    assert doc["kind"] == "cluster" and [p["name"] for p in doc["pools"]] == ["cpu", "gpu", "gpu-od"]
    assert load_cluster(f).pools()[2].spec.price_per_hour == 0.526


def test_validate_reports_a_bad_cluster_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("provider: simulated\nnode_pools:\n  - {name: g, instance_type: p3.2xl}\n")
    out = CliRunner().invoke(cli, ["validate", str(f)])
    assert out.exit_code != 0
    assert f"{f}:3: node_pools[0].instance_type = 'p3.2xl'" in out.output
    assert "did you mean p3.2xlarge" in out.output


def test_schema_of_the_cluster_file_has_a_description_on_every_field() -> None:
    out = CliRunner().invoke(cli, ["schema", "--cluster"])
    assert out.exit_code == 0
    doc = json.loads(out.output)
    assert "node_pools" in doc["properties"]
    for name, model in [("ClusterConfig", doc), *doc["$defs"].items()]:
        for field, spec in model.get("properties", {}).items():
            assert spec.get("description"), f"{name}.{field} has no description"
