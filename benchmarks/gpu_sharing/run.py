"""Two replicas at ``gpu: 0.5`` share one physical GPU through the Ray engine, each within its memory cap.

Where a GPU and PyTorch exist (otherwise it says so and exits 0), on a Ray head started here with the
machine's GPUs:

1. replicas ``a`` and ``b`` (``gpu: 0.5``) with a PyTorch predictor that holds a block of 30% of the GPU's
   memory and multiplies matrices per request start on the same node; Ray gives both the same GPU
   (``CUDA_VISIBLE_DEVICES``) and the engine caps each at half of its memory
   (``THRIFTY_GPU_MEMORY_FRACTION`` -> ``torch.cuda.set_per_process_memory_fraction``, see
   ``thrifty.engines.gpu_limits``);
2. both serve: each answers 20 requests, and reports the GPU it sees, its cap and the most memory its
   PyTorch allocator ever reserved, which must stay within the cap;
3. ``b`` stops, and a third replica ``c`` (``gpu: 0.5``) whose predictor asks for 70% of the GPU's memory
   (over its 50% cap) must fail to start with PyTorch's out-of-memory error, reported as the replica's
   error, while ``a`` keeps serving.

    .venv/bin/python benchmarks/gpu_sharing/run.py [--json-out F]

Needs the ``ray`` extra and PyTorch with CUDA (``pip install torch``). Exit code 0: every check held (or
no GPU: skipped); 1: a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

PREDICTOR = """
import os

import torch


class Predictor:
    def __init__(self, config):
        self.total = torch.cuda.get_device_properties(0).total_memory
        # Over the cap, this raises torch.cuda.OutOfMemoryError and the replica fails to start.
        self.block = torch.empty(int(config["hold_fraction"] * self.total), dtype=torch.uint8, device="cuda")
        self.a = torch.ones(1024, 1024, device="cuda")

    def predict(self, payload):
        value = float((self.a @ self.a)[0, 0])
        return {
            "pid": os.getpid(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "memory_fraction": os.environ.get("THRIFTY_GPU_MEMORY_FRACTION"),
            "gpu_name": torch.cuda.get_device_name(0),
            "total_bytes": self.total,
            "max_reserved_bytes": torch.cuda.max_memory_reserved(0),
            "value": value,
        }
"""

GPU_PROBE = (
    "import torch, json; ok = torch.cuda.is_available(); "
    "print(json.dumps({'ok': ok, 'count': torch.cuda.device_count() if ok else 0, "
    "'total': torch.cuda.get_device_properties(0).total_memory if ok else 0}))"
)


def probe_gpu() -> dict[str, Any] | None:
    """The GPUs PyTorch sees, probed in a child process (the driver must not hold a CUDA context)."""
    try:
        out = subprocess.run([sys.executable, "-c", GPU_PROBE], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"skipped: could not probe for a GPU ({exc})")
        return None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        print(f"skipped: PyTorch is not usable here ({last}); install torch with CUDA on a GPU machine")
        return None
    info: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if not info["ok"]:
        print("skipped: no GPU (torch.cuda.is_available() is False)")
        return None
    return info


def launch(replica_id: str, project: Path, hold_fraction: float) -> Any:
    from thrifty.config.schema import ApiConfig
    from thrifty.engines.base import ReplicaLaunch

    api = ApiConfig.model_validate({
        "name": "gpu-share", "compute": {"cpu": 1, "mem": "1Gi", "gpu": 0.5},
        "predictor": {"config": {"hold_fraction": hold_fraction}},
    })  # fmt: skip
    return ReplicaLaunch(replica_id, "gpu-share", "r1", api.model_dump(mode="json", by_alias=True), str(project))


async def until(engine: Any, replica_id: str, states: tuple[str, ...], timeout_s: float = 300.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        obs = next((o for o in engine.observe() if o.replica_id == replica_id), None)
        if obs is not None and obs.state in states:
            return obs
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{replica_id} not {' or '.join(states)} within {timeout_s:g}s")


async def gone(engine: Any, replica_id: str, timeout_s: float = 60.0) -> None:
    for _ in range(int(timeout_s / 0.2)):
        if all(o.replica_id != replica_id for o in engine.observe()):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{replica_id} still running after {timeout_s:g}s")


async def run(gpu: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    from thrifty.dataplane.platform_secret import HEADER, ensured_secret_file, read_secret
    from thrifty.engines.base import NodePlacement
    from thrifty.engines.ray import RayEngine
    from thrifty.engines.ray_cluster import RayCluster

    home = Path(tempfile.mkdtemp(prefix="thr-gpu-"))
    project = home / "project"
    project.mkdir()
    (project / "predictor.py").write_text(PREDICTOR)
    cluster = await asyncio.to_thread(RayCluster.connect, home, head_cpus=4, head_gpus=int(gpu["count"]))
    engine = RayEngine(home, default_grace_s=5.0, poll_interval_s=0.2)
    placement = NodePlacement(cluster.head_node_id(), gpu_mem_bytes=int(gpu["total"]))
    secret = read_secret(ensured_secret_file(home)).decode()
    report: dict[str, Any] = {"gpu_total_bytes": gpu["total"]}
    ok = True

    def check(name: str, held: bool, detail: Any) -> None:
        nonlocal ok
        ok = ok and held
        report.setdefault("checks", []).append({"check": name, "ok": held, "detail": detail})
        print(f"{'PASS' if held else 'FAIL'}  {name}: {detail}")

    try:
        for rid in ("a", "b"):
            await engine.start_replica(launch(rid, project, 0.3), placement)
        answers: dict[str, list[dict[str, Any]]] = {}
        async with httpx.AsyncClient(timeout=60) as http:
            for rid in ("a", "b"):
                obs = await until(engine, rid, ("ready", "exited"))
                if obs.state != "ready":
                    check(f"replica {rid} starts", False, obs.error)
                    return False, report
                url = f"http://{obs.host}:{obs.port}/"
                answers[rid] = []
                for _ in range(20):
                    r = await http.post(url, json={}, headers={HEADER.decode(): secret})
                    if r.status_code != 200:
                        check(f"replica {rid} serves", False, f"{r.status_code} {r.text[:200]}")
                        return False, report
                    answers[rid].append(r.json())
            for rid, got in answers.items():
                last = got[-1]
                cap = float(last["memory_fraction"]) * last["total_bytes"]
                seen = f"CUDA_VISIBLE_DEVICES={last['cuda_visible_devices']}, pid {last['pid']}"
                check(f"replica {rid} serves on {last['gpu_name']}", True, f"20 answers, {seen}")
                check(f"replica {rid} within its cap", last["max_reserved_bytes"] <= cap,
                      f"max reserved {last['max_reserved_bytes'] / 2**30:.2f} GiB <= cap "
                      f"{cap / 2**30:.2f} GiB ({last['memory_fraction']} of the GPU)")  # fmt: skip
            same = answers["a"][-1]["cuda_visible_devices"] == answers["b"][-1]["cuda_visible_devices"]
            check("a and b share one physical GPU", same,
                  {rid: got[-1]["cuda_visible_devices"] for rid, got in answers.items()})  # fmt: skip
            if shutil.which("nvidia-smi"):
                smi = await asyncio.to_thread(
                    subprocess.run,
                    ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader"],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                report["nvidia_smi"] = smi.stdout.strip().splitlines()
                print("nvidia-smi compute apps:", "; ".join(report["nvidia_smi"]) or "-")

            await engine.stop_replica("b", 5.0)
            await gone(engine, "b")
            await engine.start_replica(launch("c", project, 0.7), placement)
            obs = await until(engine, "c", ("ready", "exited"))
            error = obs.error or {}
            message = f"{error.get('error', '')}: {error.get('message', '')}".strip(": ")
            over = obs.state == "exited" and "out of memory" in message.lower()
            check("c (70% of the GPU, cap 50%) fails to start with a clear error", over, message or obs.state)
            obs_a = await until(engine, "a", ("ready", "exited"))
            r = await http.post(f"http://{obs_a.host}:{obs_a.port}/", json={}, headers={HEADER.decode(): secret})
            check("a keeps serving after c failed", r.status_code == 200, r.status_code)
    finally:
        await engine.close(5.0)
        await asyncio.to_thread(cluster.close)
    return ok, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    gpu = probe_gpu()
    if gpu is None:
        sys.exit(0)
    print(f"GPU: {gpu['count']} device(s), {gpu['total'] / 2**30:.1f} GiB each")
    ok, report = asyncio.run(run(gpu))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
    print("all checks held" if ok else "a check failed")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
