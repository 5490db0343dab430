"""deploy/k8s/ and deploy/Containerfile, checked offline.

1. Every manifest parses and validates against the Kubernetes schemas of its kind
   (scripts/k8s-validate.sh: pinned npm packages kubernetes-models 5.1.0 and
   @kubernetes-models/keda 2.0.0 for the schemas, @kubernetes/client-node 2.0.1's
   field lists and the KEDA package's type declarations for unknown fields).
2. The validator fails on broken manifests (a type, a required field, a misspelt
   field, a YAML error, an unknown kind): it can fail.
3. The manifests say what the issue asks: the HPA min 2 / max 10 / CPU 70%, probes on
   /readyz and /healthz, a preStop drain, CPU request and limit, a headless Service
   the gateway's --backend-dns names, KEDA on surge_worker_queue_jobs{state="ready"},
   a PodDisruptionBudget per Deployment, external PostgreSQL and Redis, and every
   flag they pass exists in `surge help <command>`.
4. The Containerfile's runtime packages provide every shared library the binary needs.
"""
import json
import re
import shutil
import subprocess

import pytest

from harness import REPO_ROOT, SURGE_BIN

VALIDATE = REPO_ROOT / "scripts" / "k8s-validate.sh"
K8S = REPO_ROOT / "deploy" / "k8s"


def _validate(*files, dump=False):
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.fail("node and npm are needed (scripts/deps.sh test installs them)")
    args = [str(VALIDATE)] + (["--dump"] if dump else []) + [str(f) for f in files]
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def docs():
    res = _validate(*sorted(K8S.glob("*.yaml")), dump=True)
    assert res.returncode == 0, res.stderr
    return [d["doc"] for d in json.loads(res.stdout)]


def _one(docs, kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, "%s/%s: %d documents" % (kind, name, len(found))
    return found[0]


def test_manifests_validate():
    files = sorted(K8S.glob("*.yaml"))
    assert len(files) >= 6, files
    res = _validate(*files)
    assert res.returncode == 0, res.stderr
    m = re.search(r"(\d+) documents in (\d+) files valid", res.stdout)
    assert m and int(m.group(1)) >= 18 and int(m.group(2)) == len(files), res.stdout


BROKEN = [
    # (file, old, new, expected message)
    ("gateway.yaml", "replicas: 2", "replicas: two", "data/spec/replicas must be integer"),
    ("app.yaml", "readinessProbe:", "readinesProbe:",
     "containers[0].readinesProbe: unknown field (not in V1Container)"),
    ("app.yaml", "averageUtilization: 70", 'averageUtilization: "70"',
     "averageUtilization must be integer"),
    ("app.yaml", "  selector:\n    matchLabels:\n      app.kubernetes.io/name: surge-app\n  strategy:",
     "  strategy:", "data/spec must have required property selector"),
    ("worker.yaml", "  scaleTargetRef:", "  scaleTarget:",
     "must have required property scaleTargetRef"),
    ("worker.yaml", "  minReplicaCount: 1", "  minReplicaCnt: 1",
     "ScaledObject.spec.minReplicaCnt: unknown field"),
    ("worker.yaml", "    - type: prometheus\n      metadata:", "    - metadata:",
     "data/spec/triggers/0 must have required property type"),
    ("external.yaml", "type: ExternalName", "type: Externalname", "must be equal to one of"),
    ("config.yaml", "kind: ConfigMap", "kind: Configmap", "unknown apiVersion/kind v1/Configmap"),
    ("namespace.yaml", "  name: surge\n", "  name: [surge\n", "YAML:"),
]


@pytest.mark.parametrize("fname,old,new,message", BROKEN,
                         ids=[b[3][:40] for b in BROKEN])
def test_validator_rejects_broken_manifests(tmp_path, fname, old, new, message):
    text = (K8S / fname).read_text()
    assert old in text, "the manifest changed: update this case"
    broken = tmp_path / fname
    broken.write_text(text.replace(old, new, 1))
    res = _validate(broken)
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert message in res.stderr, res.stderr
    assert str(broken) in res.stderr


def test_validator_usage():
    res = subprocess.run([str(VALIDATE), "--dump", "/nonexistent.yaml"], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 1 and "cannot read" in res.stderr, res.stderr


def _container(dep):
    cs = dep["spec"]["template"]["spec"]["containers"]
    assert len(cs) == 1
    return cs[0]


def test_app_deployment_hpa_and_service(docs):
    dep = _one(docs, "Deployment", "surge-app")
    c = _container(dep)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert c["resources"]["requests"]["cpu"] == "500m" and c["resources"]["limits"]["cpu"]
    assert c["args"][0] == "app"
    hpa = _one(docs, "HorizontalPodAutoscaler", "surge-app")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "surge-app"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    svc = _one(docs, "Service", "surge-app")
    assert svc["spec"]["clusterIP"] == "None"
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())


def test_gateway_discovers_the_headless_service(docs):
    dep = _one(docs, "Deployment", "surge-gateway")
    c = _container(dep)
    args = c["args"]
    assert args[0] == "lb"
    value = args[args.index("--backend-dns") + 1]
    m = re.fullmatch(r"\$\((\w+)\)", value)
    assert m, value
    cm = _one(docs, "ConfigMap", "surge-config")
    target = cm["data"][m.group(1)]
    svc = _one(docs, "Service", "surge-app")
    port = svc["spec"]["ports"][0]["port"]
    assert target == "surge-app.%s.svc.cluster.local:%d" % (svc["metadata"]["namespace"], port)
    assert _one(docs, "Service", "surge-gateway")["spec"]["ports"][0]["targetPort"] == "http"


def test_worker_scaled_by_keda_on_queue_depth(docs):
    so = _one(docs, "ScaledObject", "surge-worker")
    assert so["spec"]["scaleTargetRef"]["name"] == "surge-worker"
    [trig] = so["spec"]["triggers"]
    assert trig["type"] == "prometheus"
    assert "surge_worker_queue_jobs" in trig["metadata"]["query"]
    assert 'state="ready"' in trig["metadata"]["query"]
    assert int(trig["metadata"]["threshold"]) > 0
    _one(docs, "Deployment", "surge-worker")


def test_every_deployment_has_a_disruption_budget(docs):
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    for dep in (d for d in docs if d["kind"] == "Deployment"):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        covering = [p for p in pdbs if all(labels.get(k) == v for k, v in
                                           p["spec"]["selector"]["matchLabels"].items())]
        assert len(covering) == 1, dep["metadata"]["name"]


def test_external_engines_and_secrets(docs):
    for name in ("postgres-0", "postgres-1"):
        svc = _one(docs, "Service", name)
        assert "selector" not in svc["spec"]
        ep = _one(docs, "Endpoints", name)
        assert ep["subsets"][0]["ports"][0]["port"] == svc["spec"]["ports"][0]["port"]
    assert _one(docs, "Service", "redis")["spec"]["type"] == "ExternalName"
    secret = _one(docs, "Secret", "surge-secrets")
    assert {"admin-token", "lb-admin-token", "store-url"} <= set(secret["stringData"])
    assert secret["stringData"]["store-url"].startswith("postgres://")
    assert "target_session_attrs=read-write" in secret["stringData"]["store-url"]
    cm = _one(docs, "ConfigMap", "surge-config")
    for k in ("SURGE_CACHE", "SURGE_SESSIONS", "SURGE_QUEUE"):
        assert cm["data"][k].startswith("redis://redis.surge.svc.cluster.local:")


def test_manifest_flags_exist_in_the_binary(docs):
    """Every --flag a manifest passes is one `surge help <command>` lists."""
    helps = {}
    for dep in (d for d in docs if d["kind"] == "Deployment"):
        args = _container(dep)["args"]
        cmd = args[0]
        if cmd not in helps:
            res = subprocess.run([str(SURGE_BIN), "help", cmd], capture_output=True, text=True,
                                 timeout=10)
            helps[cmd] = res.stdout + res.stderr
        for a in args[1:]:
            if a.startswith("--"):
                assert re.search(r"(^|\s)%s(\s|$)" % re.escape(a), helps[cmd], re.M), (
                    "%s: surge %s has no %s" % (dep["metadata"]["name"], cmd, a))


def test_containerfile_runtime_packages_cover_the_binary():
    text = (REPO_ROOT / "deploy" / "Containerfile").read_text()
    stages = text.split("\nFROM ")
    assert len(stages) == 3, "a build stage and a runtime stage"
    assert stages[0].lstrip().startswith("# ") and "debian:12-slim AS build" in text
    runtime = stages[2]
    assert runtime.startswith("debian:12-slim")
    m = re.search(r"apt-get install -y --no-install-recommends \\\n(.*?)\n \&\&", runtime, re.S)
    assert m, runtime
    pkgs = set(m.group(1).replace("\\", " ").split())
    assert "COPY --from=build /src/build/surge /usr/local/bin/surge" in runtime
    assert re.search(r"^USER \d+", runtime, re.M), "runs unprivileged"
    needed = re.findall(r"Shared library: \[(.+?)\]",
                        subprocess.run(["readelf", "-d", str(SURGE_BIN)], capture_output=True,
                                       text=True).stdout)
    assert needed
    ldcache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    base = ("libc.so", "libm.so", "libasan.so", "libubsan.so", "libtsan.so", "libgcc_s.so",
            "libpthread.so", "libdl.so", "librt.so")  # in the base image / sanitizer builds
    missing = []
    for lib in needed:
        if lib.startswith(base):
            continue
        m = re.search(r"^\s*%s \(.*\) => (\S+)$" % re.escape(lib), ldcache, re.M)
        assert m, lib
        path = m.group(1)
        owner = None
        for p in (path, path.replace("/lib/", "/usr/lib/", 1),
                  subprocess.run(["readlink", "-f", path], capture_output=True,
                                 text=True).stdout.strip()):
            res = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True)
            if res.returncode == 0:
                owner = res.stdout.split(":")[0]
                break
        assert owner, lib
        if owner not in pkgs:
            missing.append("%s (%s)" % (lib, owner))
    assert not missing, "Containerfile runtime stage lacks: %s" % ", ".join(missing)
