"""Offline checks of deploy/helm/babysitter (run by scripts/helm-check; see its header)."""
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml  # installed with kubernetes-validate
import helm_python as helm

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy/helm/babysitter"
KUBE = "v1.33.0"
VALUE_SETS = {"default": None, "production": ROOT / "deploy/helm/ci/production.yaml"}
# Kinds whose schemas are not in Kubernetes (Prometheus operator CRDs): checked by hand below.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}")


def ok(msg):
    print(f"ok   {msg}")


def load_values(path):
    return None if path is None else yaml.safe_load(path.read_text())


def rule_set(rules, where):
    out = set()
    for r in rules:
        for field in ("apiGroups", "resources", "verbs"):
            if any("*" in v for v in r.get(field, [])):
                fail(f"{where}: wildcard in {field}: {r}")
        names = tuple(sorted(r.get("resourceNames", [])))
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for v in r.get("verbs", []):
                    out.add((g, res, v, names))
    return out


def expected_rules(values):
    """What the code uses (deploy/rbac/*.yaml), filtered by the chart's workload toggles."""
    want = set()
    files = sorted((ROOT / "deploy/rbac").glob("*.yaml"))
    if not files:
        fail("deploy/rbac/*.yaml: no rules files (the code's RBAC contract)")
    toggles = {"jobs": True, "jobsets": True, "pytorchjobs": True, "trainjobs": True}
    toggles.update(((values or {}).get("rbac") or {}).get("workloads") or {})
    patch_cm = ((values or {}).get("rbac") or {}).get("patchConfigMaps", True)
    for f in files:
        for r in yaml.safe_load(f.read_text()) or []:
            if f.name.startswith("leader"):
                continue
            for item in rule_set([r], str(f)):
                g, res, v, names = item
                base = res.split("/")[0]
                if base in toggles and not toggles[base]:
                    continue
                if base == "configmaps" and not patch_cm:
                    continue
                want.add(item)
    return want


def check_rbac(docs, values, name):
    before = len(failures)
    granted = set()
    for d in docs:
        if d["kind"] in ("ClusterRole", "Role") and not d["metadata"]["name"].endswith("-leader"):
            got = rule_set(d.get("rules", []), f"{name}: {d['kind']}/{d['metadata']['name']}")
            granted |= got
            want = expected_rules(values)
            extra, missing = got - want, want - got
            if extra:
                fail(f"{name}: {d['kind']} {d['metadata'].get('namespace','')}/{d['metadata']['name']} grants more than the code uses: {sorted(extra)}")
            if missing:
                fail(f"{name}: {d['kind']} {d['metadata']['name']} lacks what the code uses: {sorted(missing)}")
        if d["kind"] == "Role" and d["metadata"]["name"].endswith("-leader"):
            rule_set(d.get("rules", []), f"{name}: leader Role")
            allowed = set()
            for r in yaml.safe_load((ROOT / "deploy/rbac/leader-rules.yaml").read_text()):
                allowed |= {(g, res, v) for g, res, v, _ in rule_set([r], "leader-rules.yaml")}
            for r in d["rules"]:
                if set(r["verbs"]) - {"create"} and not r.get("resourceNames"):
                    fail(f"{name}: leader Role reaches every Lease: {r}")
                for g, res, v, _ in rule_set([r], "leader Role"):
                    if (g, res, v) not in allowed:
                        fail(f"{name}: leader Role grants {v} on {g}/{res}, not in deploy/rbac/leader-rules.yaml")
    if granted and len(failures) == before:
        ok(f"{name}: RBAC grants exactly the rules in deploy/rbac/ ({len(granted)} verb×resource), no wildcards")


def check_config(docs, name, binary):
    cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")]
    if len(cms) != 1:
        fail(f"{name}: expected one config ConfigMap, got {len(cms)}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "babysitter.yaml"
        text = cms[0]["data"]["babysitter.yaml"]
        # Files the pod gets from Secrets: stand-ins with valid content, at local paths.
        mounted = {
            "/etc/babysitter/tokens/tokens": "oncall:operator:" + "ab" * 32 + "\n",
            "/etc/babysitter/signing/key": "k" * 32 + "\n",
        }
        for path, content in mounted.items():
            if path in text:
                local = Path(tmp) / Path(path).name
                local.write_text(content)
                text = text.replace(path, str(local))
        cfg.write_text(text)
        args = [binary, "check", "--config", str(cfg)]
        rbs = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-runbooks")]
        if rbs:
            rdir = Path(tmp) / "runbooks"
            rdir.mkdir()
            for f, text in rbs[0]["data"].items():
                (rdir / f).write_text(text)
            args += ["--runbooks", str(rdir)]
        env = dict(os.environ)
        # Secrets the chart passes as env vars: give them dummy values for the check.
        for var in re.findall(r"env: ([A-Z_][A-Z0-9_]*)", cfg.read_text()):
            env.setdefault(var, "x" * 32)
        env.pop("BABYSITTER_CONFIG", None)
        r = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp)
        if r.returncode != 0:
            fail(f"{name}: rendered config fails `babysitter check`:\n{r.stdout}{r.stderr}")
        else:
            ok(f"{name}: rendered config{' and runbooks' if rbs else ''} pass `babysitter check`")


def check_crds(docs, name):
    for d in docs:
        if d["kind"] == "PrometheusRule":
            groups = d["spec"]["groups"]
            if not groups or not all(g.get("rules") for g in groups):
                fail(f"{name}: PrometheusRule without rules")
        if d["kind"] == "ServiceMonitor":
            eps = d["spec"].get("endpoints", [])
            if not eps or eps[0].get("port") != "http":
                fail(f"{name}: ServiceMonitor must scrape the `http` port")


def check_deployment(docs, values, name):
    deps = [d for d in docs if d["kind"] == "Deployment"]
    if len(deps) != 1:
        fail(f"{name}: expected one Deployment")
        return
    spec = deps[0]["spec"]["template"]["spec"]
    c = spec["containers"][0]
    sc = c.get("securityContext", {})
    for k, v in (("allowPrivilegeEscalation", False), ("readOnlyRootFilesystem", True)):
        if sc.get(k) is not v:
            fail(f"{name}: container securityContext.{k} must be {v}")
    if spec.get("securityContext", {}).get("runAsNonRoot") is not True:
        fail(f"{name}: pod must run as non-root")
    probes = {p: c.get(p, {}).get("httpGet", {}).get("path") for p in ("livenessProbe", "readinessProbe")}
    if probes != {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}:
        fail(f"{name}: probes must be /healthz and /readyz, got {probes}")
    if not c.get("resources", {}).get("requests"):
        fail(f"{name}: container has no resource requests")
    ok(f"{name}: Deployment hardened (non-root, read-only rootfs, no escalation, probes, resources), replicas={deps[0]['spec']['replicas']}")


def main():
    binary = sys.argv[1]
    for name, vpath in VALUE_SETS.items():
        values = load_values(vpath)
        report = helm.lint(str(CHART), values, strict=True, kube_version=KUBE)
        bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
        if bad:
            fail(f"{name}: helm lint --strict: {bad}")
        else:
            ok(f"{name}: helm lint --strict ({KUBE})")
        chart = helm.Chart.load(str(CHART))
        chart.validate_schema(values)
        rendered = chart.render(values, name="babysitter", namespace="ml-platform", is_install=True)
        docs = []
        with tempfile.TemporaryDirectory() as tmp:
            files = []
            for path, text in sorted(rendered.items()):
                if path.endswith("NOTES.txt"):
                    if "annotate" not in text:
                        fail(f"{name}: NOTES.txt does not say how to annotate a job")
                    continue
                for i, d in enumerate(yaml.safe_load_all(text)):
                    if not d:
                        continue
                    docs.append(d)
                    if d["kind"] in CRD_KINDS:
                        continue
                    f = Path(tmp) / f"{len(files):02d}-{d['kind']}.yaml"
                    f.write_text(yaml.safe_dump(d))
                    files.append(str(f))
            r = subprocess.run(
                [str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "--quiet", "-k", KUBE[1:], *files],
                capture_output=True, text=True,
            )
            if r.returncode != 0:
                fail(f"{name}: kubernetes-validate --strict:\n{r.stdout}{r.stderr}")
            else:
                ok(f"{name}: {len(files)} manifests valid against Kubernetes {KUBE} schemas ({', '.join(sorted({d['kind'] for d in docs}))})")
        check_crds(docs, name)
        check_deployment(docs, values, name)
        check_rbac(docs, values, name)
        check_config(docs, name, binary)
    # A values file that would lose the audit log must be refused.
    try:
        helm.Chart.load(str(CHART)).render({"replicaCount": 2}, name="b", namespace="x")
        fail("replicaCount=2 without PostgreSQL rendered; it must be refused")
    except helm.HelmError as e:
        ok(f"replicaCount=2 with SQLite refused: {str(e).splitlines()[0][:100]}")
    try:
        helm.Chart.load(str(CHART)).validate_schema({"securityContext": {"privileged": True}})
        fail("values.schema.json accepted a privileged container")
    except helm.HelmError:
        ok("values.schema.json refuses a privileged container")
    files_dir = CHART / "files"
    for cmd in (["promtool", "check", "rules", "babysitter-rules.yaml"], ["promtool", "test", "rules", "babysitter-rules.test.yaml"]):
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=files_dir)
        (ok if r.returncode == 0 else fail)(f"{' '.join(cmd)}" + ("" if r.returncode == 0 else f":\n{r.stdout}{r.stderr}"))
    dash = json.loads((files_dir / "grafana-dashboard.json").read_text())
    exprs = [t["expr"].replace("$__rate_interval", "5m") for p in dash["panels"] for t in p.get("targets", [])]
    with tempfile.TemporaryDirectory() as tmp:
        rf = Path(tmp) / "dash.yaml"
        rf.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)]}]}))
        r = subprocess.run(["promtool", "check", "rules", str(rf)], capture_output=True, text=True)
        (ok if r.returncode == 0 else fail)(f"Grafana dashboard: {len(exprs)} PromQL queries parse" + ("" if r.returncode == 0 else f":\n{r.stdout}{r.stderr}"))
    if failures:
        print(f"\n{len(failures)} chart check(s) failed")
        sys.exit(1)
    print("\nchart checks passed")


if __name__ == "__main__":
    main()
