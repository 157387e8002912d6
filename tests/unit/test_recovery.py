"""After an operator crash: which recorded processes are adopted, which are gone, which are stragglers."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_process_identity import fake_proc

from thrifty.config import parse_text
from thrifty.control.api_state import ApiRuntime, adopt_runtime
from thrifty.control.home import Home
from thrifty.control.recovery import PortInUseError, check_port_free, describe_holder, stragglers, survey
from thrifty.control.store import ProcessRecord
from thrifty.engines.base import ReplicaObservation
from thrifty.engines.identity import ProcessIdentity
from thrifty.spec import ApiSpec


def record(rid: str, pid: int, ticks: int, token: str, kind: str = "replica") -> ProcessRecord:
    api, rev = ("iris", "rev1") if kind == "replica" else (None, None)
    return ProcessRecord(rid, kind, api, rev, ProcessIdentity(pid, ticks, token), 1.0)


def test_survey_adopts_only_exact_identities(tmp_path: Path) -> None:
    fake_proc(tmp_path, 10, ticks=100, token="g")
    fake_proc(tmp_path, 11, ticks=110, token="a")
    fake_proc(tmp_path, 12, ticks=999, token="b")  # pid 12 reused: another start time
    fake_proc(tmp_path, 13, ticks=130, token="other")  # same start time, not our token
    records = [
        record("gateway", 10, 100, "g", kind="gateway"),
        record("iris-a", 11, 110, "a"),
        record("iris-b", 12, 120, "b"),
        record("iris-c", 13, 130, "c"),
        record("iris-d", 14, 140, "d"),  # dead
        ProcessRecord("iris-e", "replica", "iris", "rev1", None, 1.0),  # recorded by an older version
    ]
    found = survey(records, tmp_path)
    assert found.gateway is not None and found.gateway.id == "gateway"
    assert [r.id for r in found.replicas] == ["iris-a"]
    assert sorted(r.id for r in found.gone) == ["iris-b", "iris-c", "iris-d", "iris-e"]


def test_stragglers_are_this_homes_dataplane_processes(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    home = Home(tmp_path / "home")
    other = Home(tmp_path / "home2")

    def cmd(pid: int, ticks: int, *args: str) -> None:
        (fake_proc(proc, pid, ticks=ticks, token="t") / "cmdline").write_bytes(b"\0".join(a.encode() for a in args))

    cmd(20, 1, "python", "-m", "thrifty.dataplane.gateway_main", "--port-file", f"{home.run_dir}/gateway.json")
    cmd(21, 2, "python", "-m", "thrifty.dataplane.replica_main", "--spec", f"{home.run_dir}/replicas/x/spec.json")
    cmd(22, 3, "python", "-m", "thrifty.dataplane.gateway_main", "--port-file", f"{other.run_dir}/gateway.json")
    cmd(23, 4, "vim", f"{home.run_dir}/replicas/x/spec.json")  # not a platform process
    found = stragglers(home, exclude={21}, proc=proc)
    assert [(i.pid, i.start_ticks) for i in found] == [(20, 1)]
    assert describe_holder(22, proc) == f"thrifty gateway of {other.root}"
    assert describe_holder(23, proc).startswith("vim ")


def runtime(min_r: int = 1, max_r: int = 5) -> ApiRuntime:
    text = f"apis:\n  - name: iris\n    autoscaling: {{min_replicas: {min_r}, max_replicas: {max_r}}}\n"
    spec = ApiSpec("iris", parse_text(text, "t.yaml").apis[0], "code", "/p")
    return ApiRuntime(spec, 0.0, 0.0, spec.config.autoscaling.initial_replicas)


def obs(rid: str, revision: str) -> ReplicaObservation:
    return ReplicaObservation(rid, "iris", revision, "ready", 0.0, port=1)


def test_adopted_replicas_set_the_desired_count_and_keep_a_refresh_suffix() -> None:
    rt = runtime()
    assert adopt_runtime(rt, [obs("a", rt.revision), obs("b", rt.revision), obs("c", rt.revision)]) == 3
    assert rt.desired == 3  # the autoscaler had scaled up: no replica is stopped
    refreshed = runtime()
    assert adopt_runtime(refreshed, [obs("a", refreshed.revision + "-abc123")]) == 1
    assert refreshed.revision.endswith("-abc123")  # a `thrifty refresh` before the crash: not restarted again
    capped = runtime(max_r=2)
    assert adopt_runtime(capped, [obs(str(i), capped.revision) for i in range(4)]) == 4 and capped.desired == 2
    old = runtime(min_r=2)
    assert adopt_runtime(old, [obs("a", "an-older-revision")]) == 0 and old.desired == 2


def test_a_port_held_by_an_orphaned_gateway_is_refused_naming_its_pid_and_home(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    orphan_home = tmp_path / "old-home"
    (proc / "net").mkdir(parents=True)
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    listen = "   0: 0100007F:22B8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1\n"
    (proc / "net" / "tcp").write_text(header + listen)  # 0x22B8 = 8888, state 0A = LISTEN
    (proc / "net" / "tcp6").write_text(header)
    gw = fake_proc(proc, 30, ticks=1, token="t")
    args = ["python", "-m", "thrifty.dataplane.gateway_main", "--port-file", f"{orphan_home}/run/gateway.json"]
    (gw / "cmdline").write_bytes(b"\0".join(a.encode() for a in args))
    (gw / "fd").mkdir()
    (gw / "fd" / "3").symlink_to("socket:[555]")

    check_port_free(0, proc)  # any free port: nothing to check
    check_port_free(8889, proc)  # nobody listens there
    with pytest.raises(PortInUseError) as err:
        check_port_free(8888, proc)
    assert err.value.message == (
        f"port 8888 is held by pid 30 (thrifty gateway of {orphan_home}); "
        f"run `thrifty --home {orphan_home} down` or kill 30"
    )
