"""`opsstack up` on a running stack restarts only the programs whose settings changed: what a
program's fingerprint covers, checked on the full default stack without starting anything."""
from __future__ import annotations

import copy

import pytest
import yaml

from core.config import RESOLVED_NAME, load_data
from stack import runtime
from stack.launcher import Stack


def _fingerprints(data: dict) -> dict[str, str]:
    """Resolve like `up` does (remembered ports, kept secrets), write the resolved file, and
    return each program's fingerprint (as read back from the file, as `apply` does)."""
    cfg = load_data(copy.deepcopy(data))
    r = runtime.resolve(cfg)
    runtime.write_resolved(r)
    back = yaml.safe_load((runtime.run_dir(cfg) / RESOLVED_NAME).read_text())
    back["runtime"] = r["runtime"]
    st = Stack(cfg)
    return {p.name: st.fingerprint(p, back) for p in st.programs(back)}


@pytest.fixture
def base(tmp_path, monkeypatch):
    monkeypatch.delenv("OPSSTACK_DATABASE_URL", raising=False)
    monkeypatch.delenv("OPSSTACK_RECEIVER_TOKEN", raising=False)
    return {"stack": {"run_dir": str(tmp_path / ".run")}}


def _changed(base: dict, **sections) -> set[str]:
    before = _fingerprints(base)
    data = copy.deepcopy(base)
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    after = _fingerprints(data)
    assert set(after) == set(before)
    return {n for n in after if after[n] != before[n]}


def test_the_same_config_changes_no_program(base):
    first = _fingerprints(base)
    assert {"prometheus", "alertmanager", "receiver", "exporter-app", "forecaster"} <= set(first)
    assert _fingerprints(base) == first


@pytest.mark.parametrize("sections, restarted", [
    ({"alerts": {"latency": {"p95_seconds": 0.37}}}, set()),       # rules only: Prometheus reloads
    ({"alertmanager": {"critical_group_wait": "7s"}}, set()),      # routes only: Alertmanager reloads
    ({"receiver": {"threads": 3}}, {"receiver"}),
    ({"stack": {"retention": "20d"}}, {"prometheus"}),
    # the forecaster reads whole sections of exporters and demo (over-inclusive is safe)
    ({"exporters": {"app": {"max_concurrency": 7}}}, {"exporter-app", "forecaster"}),
])
def test_a_change_restarts_only_the_programs_that_read_it(base, sections, restarted):
    changed = _changed(base, **sections)
    assert changed == restarted


def test_a_demo_setting_restarts_the_demo_services_and_not_the_receiver(base):
    changed = _changed(base, demo={"home_latency": "120ms"})
    services = {n for n in _fingerprints(base) if n.startswith("demo-") and n != "demo-db-workload"}
    assert len(services) == 4
    assert changed == services | {"forecaster"}


def test_the_same_config_renders_the_same_files(base):
    """`up` again with nothing changed reloads nothing: every rendered file comes out the same."""
    def render() -> dict:
        cfg = load_data(copy.deepcopy(base))
        r = runtime.resolve(cfg)
        runtime.write_resolved(r)
        st = Stack(cfg)
        st.render(r, st.programs(r))
        return st._rendered()
    first = render()
    assert {"prometheus.yml", "alertmanager.yml", "supervisord.conf", RESOLVED_NAME} <= {p.name for p in first}
    assert any(p.parent.name == "rules" for p in first)
    assert render() == first


def test_the_demo_stack_alertmanager_e_mails_the_alert_path_alerts_to_the_sink(base):
    """`up` on the default (demo) stack renders a direct route to the mail sink, checked by amtool;
    the rules it renders have the alert path's alerts on the job names its Prometheus scrapes."""
    import subprocess

    from core.procs import binary

    cfg = load_data(copy.deepcopy(base))
    r = runtime.resolve(cfg)
    runtime.write_resolved(r)
    st = Stack(cfg)
    st.render(r, st.programs(r))
    rd = runtime.run_dir(cfg)
    am = yaml.safe_load((rd / "alertmanager.yml").read_text())
    assert am["route"]["routes"][0]["receiver"] == "opsstack-direct"
    email = next(x for x in am["receivers"] if x["name"] == "opsstack-direct")["email_configs"][0]
    assert email["smarthost"] == f"{r['stack']['host']}:{r['runtime']['ports']['mailsink_smtp']}"
    res = subprocess.run([binary("amtool"), "check-config", str(rd / "alertmanager.yml")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    jobs = {j["job_name"] for j in yaml.safe_load((rd / "prometheus.yml").read_text())["scrape_configs"]}
    assert {"opsstack_receiver", "alertmanager"} <= jobs
    rules = {x["alert"]: x for f in (rd / "rules").glob("*.yml") for g in yaml.safe_load(f.read_text())["groups"]
             for x in g["rules"] if "alert" in x}
    assert 'job="opsstack_receiver"' in rules["ReceiverDown"]["expr"]
    assert {rules[n]["labels"]["route"] for n in ("ReceiverDown", "ReceiverDatabaseDown", "ReceiverBacklog",
                                                    "AlertDeliveryFailing")} == {"direct"}
