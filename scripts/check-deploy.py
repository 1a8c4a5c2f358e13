#!/usr/bin/env python3
"""Validates everything under deploy/ with the tools that can run without a cluster or a
Docker engine (`make lint` runs it through scripts/check-deploy.sh):

* every Kubernetes manifest against the Kubernetes JSON schemas, strictly
  (kubernetes-validate; kinds without a bundled schema, such as Kustomization and the
  Prometheus Operator's ServiceMonitor, are listed and must be on KNOWN_NO_SCHEMA);
* every compose file against the Compose Specification schema (check-jsonschema's
  vendored `compose-spec`);
* every Firebreak config a manifest mounts (a ConfigMap's `*.toml` keys, a compose
  service's mounted `.toml` files) with `firebreak config check`, after replacing the
  image-only paths (`/opt/firebreak/models`, `/etc/firebreak/...`) with local copies and
  the deliberately invalid `REPLACE_...` token placeholders with well-formed hashes;
* the Prometheus rules and scrape configs with promtool.

Usage: check-deploy.py FIREBREAK_BINARY
"""
import glob
import hashlib
import os
import re
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DEPLOY = os.path.join(ROOT, "deploy")
KNOWN_NO_SCHEMA = {
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}
failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}", file=sys.stderr)


def run(cmd, what):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"{what}:\n{r.stdout}{r.stderr}")
    return r


def k8s_files():
    return sorted(glob.glob(os.path.join(DEPLOY, "**", "k8s", "*.yaml"), recursive=True))


def compose_files():
    return sorted(
        p for p in glob.glob(os.path.join(DEPLOY, "**", "*.yaml"), recursive=True)
        if os.path.basename(p).startswith("compose")
    )


def config_check(binary, name, text, extra_files):
    """Runs `firebreak config check` on one mounted config, with the files it names."""
    with tempfile.TemporaryDirectory() as tmp:
        etc = os.path.join(tmp, "etc")
        os.makedirs(etc)
        for fname, body in extra_files.items():
            with open(os.path.join(etc, fname), "w") as f:
                f.write(body)
        local = text.replace("/opt/firebreak/models", os.path.join(ROOT, "models"))
        local = local.replace("/etc/firebreak/", etc + "/")
        # One well-formed, distinct hash per placeholder (the sha256 of its name).
        local = re.sub(
            r'"(REPLACE_[A-Z0-9_]*)"',
            lambda m: '"' + hashlib.sha256(m.group(1).encode()).hexdigest() + '"',
            local,
        )
        path = os.path.join(tmp, "firebreak.toml")
        with open(path, "w") as f:
            f.write(local)
        env = dict(os.environ)
        # Secrets the manifests take from a Secret: any value passes the check.
        for var in re.findall(r'secret_env\s*=\s*"([A-Z0-9_]+)"', text):
            env.setdefault(var, "check-deploy-placeholder-secret")
        r = subprocess.run([binary, "config", "check", path], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            fail(f"config check {name}:\n{r.stdout}{r.stderr}")
        else:
            print(f"ok   config check {name}")


def main():
    binary = sys.argv[1]
    venv_bin = os.path.dirname(sys.executable)
    # Kubernetes manifests.
    for path in k8s_files():
        rel = os.path.relpath(path, ROOT)
        docs = [d for d in yaml.safe_load_all(open(path)) if d]
        kinds = {(d.get("apiVersion"), d.get("kind")) for d in docs}
        schema_kinds = kinds - KNOWN_NO_SCHEMA
        if schema_kinds:
            r = run([os.path.join(venv_bin, "kubernetes-validate"), "--strict", "--quiet", path], f"kubernetes-validate {rel}")
            if r.returncode == 0:
                print(f"ok   kubernetes schema {rel}")
        for d in docs:
            if d.get("kind") == "ConfigMap":
                data = d.get("data") or {}
                tomls = {k: v for k, v in data.items() if k.endswith(".toml")}
                for key, body in tomls.items():
                    if key == "firebreak.toml" or "[server]" in body or "[fleet]" in body:
                        config_check(binary, f"{rel}:{d['metadata']['name']}/{key}", body, tomls)
    # Compose files.
    for path in compose_files():
        rel = os.path.relpath(path, ROOT)
        r = run([os.path.join(venv_bin, "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", path], f"compose schema {rel}")
        if r.returncode == 0:
            print(f"ok   compose schema {rel}")
        doc = yaml.safe_load(open(path))
        seen = set()
        for svc in (doc.get("services") or {}).values():
            for vol in svc.get("volumes") or []:
                src = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
                if src.endswith(".toml") and src not in seen:
                    seen.add(src)
                    host = os.path.normpath(os.path.join(os.path.dirname(path), src))
                    text = open(host).read()
                    siblings = {os.path.basename(p): open(p).read() for p in glob.glob(os.path.join(os.path.dirname(host), "*.toml"))}
                    config_check(binary, os.path.relpath(host, ROOT), text, siblings)
    # Prometheus.
    for rules in sorted(glob.glob(os.path.join(DEPLOY, "**", "alerts*.yml"), recursive=True)):
        run(["promtool", "check", "rules", rules], f"promtool rules {rules}")
    for conf in sorted(glob.glob(os.path.join(DEPLOY, "**", "prometheus", "prometheus*.yml"), recursive=True)):
        run(["promtool", "check", "config", "--syntax-only", conf], f"promtool config {conf}")
    if failures:
        print(f"check-deploy: {len(failures)} problem(s)", file=sys.stderr)
        sys.exit(1)
    print("check-deploy: every manifest, compose file, mounted config and rule file is valid")


if __name__ == "__main__":
    main()
