"""The deploy/grafana tree and the compose service: generated files up to date, provisioning consistent
with them, every query one the plugin answers, the compose file valid."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from campaign_counters.grafana import panels
from campaign_counters.grafana.alerts import alert_rules
from campaign_counters.grafana.dashboards import all_dashboards
from campaign_counters.grafana.export import generated_files, stale_files
from grafana_plugin import QUERY_TYPES, SUPPORTED_COMMANDS, VARIABLE, panel_queries

REPO = Path(__file__).resolve().parent.parent
TREE = REPO / "deploy" / "grafana"


def load_yaml(rel: str):
    return yaml.safe_load((TREE / rel).read_text())


def test_the_committed_files_are_what_export_writes():
    assert stale_files(TREE) == []
    assert sorted(str(p.relative_to(TREE)) for p in (TREE / "dashboards").glob("*.json")) == sorted(
        r for r in generated_files() if r.startswith("dashboards/"))


def test_export_command_checks_and_writes(tmp_path):
    from click.testing import CliRunner

    from campaign_counters.cli import main

    runner = CliRunner()
    stale = runner.invoke(main, ["grafana", "export", "--check", str(tmp_path)])
    assert stale.exit_code == 1 and len(json.loads(stale.stdout)["stale"]) == 4
    wrote = runner.invoke(main, ["grafana", "export", str(tmp_path)])
    assert wrote.exit_code == 0, wrote.output
    assert runner.invoke(main, ["grafana", "export", "--check", str(tmp_path)]).exit_code == 0
    (tmp_path / "dashboards" / "campaign.json").write_text("{}")
    assert json.loads(runner.invoke(main, ["grafana", "export", "--check", str(tmp_path)]).stdout)["stale"] == [
        "dashboards/campaign.json"]


def test_every_query_uses_the_provisioned_data_source_and_a_command_the_plugin_answers():
    (source,) = load_yaml("provisioning/datasources/campaign-counters.yaml")["datasources"]
    assert source["type"] == panels.PLUGIN_ID and source["uid"] == panels.DATASOURCE_UID
    for name, board in all_dashboards().items():
        queries = panel_queries(board)
        assert queries, name
        for panel, query in queries:
            assert len(panel["targets"]) == 1, f"{panel['title']}: a panel reads one key"
            assert panel["datasource"] == query["datasource"] == {"type": "redis-datasource",
                                                                  "uid": source["uid"]}, panel["title"]
            assert query["type"] in QUERY_TYPES
            if query["type"] == "command":
                assert query["command"] in SUPPORTED_COMMANDS, (name, panel["title"])
                assert not query.get("query"), "a query text would override the command"
            names = {m.group(1) or m.group(2) or m.group(4) for m in VARIABLE.finditer(json.dumps(query))}
            assert names <= {v["name"] for v in board["templating"]["list"]}, (panel["title"], names)
        for variable in board["templating"]["list"]:
            assert variable["datasource"]["uid"] == source["uid"]
    for rule in alert_rules()["groups"][0]["rules"]:
        assert rule["data"][0]["datasourceUid"] == source["uid"]
        assert rule["data"][0]["model"]["command"] in SUPPORTED_COMMANDS


def test_alert_rules_parse_and_chain_their_expressions():
    text = (TREE / "provisioning" / "alerting" / "campaign-counters.json").read_text()
    doc = yaml.safe_load(text)  # Grafana reads alerting provisioning as YAML or JSON
    assert doc["apiVersion"] == 1
    (group,) = doc["groups"]
    assert group["folder"] and group["name"] and group["interval"] == "1m"
    titles = [r["title"] for r in group["rules"]]
    assert len(titles) == 5 and len({r["uid"] for r in group["rules"]}) == 5
    boards = {b["uid"]: b for b in all_dashboards().values()}
    for rule in group["rules"]:
        refs = [q["refId"] for q in rule["data"]]
        assert rule["condition"] in refs
        for q in rule["data"][1:]:
            assert q["datasourceUid"] == "__expr__" and q["model"]["expression"] in refs
        panel = next(p for p in boards[rule["dashboardUid"]]["panels"] if p["id"] == rule["panelId"])
        assert rule["data"][0]["model"]["field"] in panel["targets"][0]["field"].split()


def test_dashboards_are_provisioned_from_the_mounted_folder():
    (provider,) = load_yaml("provisioning/dashboards/campaign-counters.yaml")["providers"]
    grafana = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"] if v.startswith("./"))
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    for host, container in mounts.items():
        assert (REPO / host).is_dir(), host
        if "provisioning" in host:
            assert container == "/etc/grafana/provisioning/" + Path(host).name


def test_compose_runs_grafana_pinned_behind_a_profile_with_secrets_from_the_environment():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    image, _, tag = grafana["image"].partition(":")
    assert image == "grafana/grafana-oss" and tag[0].isdigit() and tag != "latest"
    assert grafana["profiles"] == ["grafana"]
    env = grafana["environment"]
    assert env["GF_INSTALL_PLUGINS"] == f"{panels.PLUGIN_ID} {panels.PLUGIN_VERSION}"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "${GRAFANA_ANONYMOUS:-false}"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD")
    assert "GF_SECURITY_ADMIN_PASSWORD" in " ".join(grafana["entrypoint"])  # refuses to start without one
    source = (TREE / "provisioning" / "datasources" / "campaign-counters.yaml").read_text()
    for variable in ("CAMPAIGN_COUNTERS_GRAFANA_REDIS_URL", "CAMPAIGN_COUNTERS_GRAFANA_REDIS_CLIENT",
                     "CAMPAIGN_COUNTERS_GRAFANA_REDIS_PASSWORD"):
        assert f"${variable}" in source and variable in env
    assert "grafana-data" in compose["volumes"]
    others = [s for name, s in compose["services"].items() if name != "grafana"]
    assert all("grafana" not in s.get("profiles", []) for s in others)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_docker_compose_accepts_the_file():
    env = {**os.environ, "GRAFANA_ADMIN_PASSWORD": "not-a-real-one", "REDIS_PASSWORD": "not-real-either",
           "MONGO_ROOT_PASSWORD": "nor-this"}
    out = subprocess.run(["docker-compose", "--profile", "grafana", "config"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert services["grafana"]["environment"]["GF_INSTALL_PLUGINS"] == "redis-datasource 2.2.0"
    assert services["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
