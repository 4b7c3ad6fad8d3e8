#!/usr/bin/env python3
"""Writes tests/k8s/istio-security-crds.yaml from Istio's generated CRD file.

    tests/k8s/trim-istio-crds.py CRD_ALL_GEN_YAML ISTIO_VERSION ISTIO_COMMIT \
        > tests/k8s/istio-security-crds.yaml

CRD_ALL_GEN_YAML is `manifests/charts/base/files/crd-all.gen.yaml` of the istio/istio
repository at ISTIO_VERSION (a release tag) and ISTIO_COMMIT (the tag's commit).

Keeps the three security.istio.io CRDs (AuthorizationPolicy, PeerAuthentication,
RequestAuthentication) byte for byte, except every `x-kubernetes-validations` block (CEL
rules), which the test API server (Kubernetes 1.20) does not know. Text in, text out, with the
standard library only, so that the result can be compared line by line with Istio's file.
"""

import sys

KEEP = (
    "authorizationpolicies.security.istio.io",
    "peerauthentications.security.istio.io",
    "requestauthentications.security.istio.io",
)

HEADER = """\
# Istio's security.istio.io CustomResourceDefinitions: AuthorizationPolicy, PeerAuthentication
# and RequestAuthentication, serving v1 (the storage version) and v1beta1 with the same
# OpenAPI schema.
#
# Source: github.com/istio/istio, manifests/charts/base/files/crd-all.gen.yaml, Istio {version}
# (commit {commit}). Written by tests/k8s/trim-istio-crds.py.
#
# Trimmed: every `x-kubernetes-validations` block ({count} in all), nothing else. They are CEL
# rules, which Kubernetes evaluates only from 1.25 on (alpha in 1.23). The test API server is
# 1.20, whose CRD schema has no such field: kubectl refuses the untrimmed file ("unknown field
# x-kubernetes-validations") unless run with --validate=false, and the server then stores the
# CRDs without them. Trimmed, the file is what the server stores and applies as it is. What the
# rules checked, and a 1.20 server therefore lets through:
#   - selector.matchLabels: keys not empty, no `*` in keys or values;
#   - only one of `selector`, `targetRef` and `targetRefs`; no `namespace` in a targetRef;
#   - AuthorizationPolicy: `serviceAccounts` not together with `namespaces` or `principals`;
#   - RequestAuthentication: only one of `jwks`, `jwksUri` and `jwks_uri`; the URI http(s);
#     `timeout` at least 1ms;
#   - PeerAuthentication: portLevelMtls ports in 1..65535, and only with a selector.
# Everything else is checked by a 1.20 server as by a current one: types, enums, required
# fields, patterns and lengths; unknown fields are dropped (pruned).
# meshguard validates every policy it reads whatever the server let in.
"""


def trim(doc_lines):
    """Drops each `x-kubernetes-validations:` key with its value; returns (lines, count)."""
    out, count, skip_indent = [], 0, None
    for line in doc_lines:
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if skip_indent is not None:
            # The value: deeper lines, or list items at the key's own indentation.
            if indent > skip_indent or (indent == skip_indent and stripped.startswith("- ")):
                continue
            skip_indent = None
        if stripped.startswith("x-kubernetes-validations:"):
            count += 1
            skip_indent = indent
            continue
        out.append(line)
    return out, count


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    path, version, commit = sys.argv[1:]
    text = open(path, encoding="utf-8").read()
    docs, doc = [], []
    for line in text.split("\n"):
        if line == "---":
            docs.append(doc)
            doc = []
        else:
            doc.append(line)
    docs.append(doc)

    kept, total = {}, 0
    for doc in docs:
        names = [l.strip()[len("name: "):] for l in doc if l.startswith("  name: ")]
        if len(names) == 1 and names[0] in KEEP:
            lines, count = trim(doc)
            while lines and lines[-1] == "":
                lines.pop()
            kept[names[0]] = lines
            total += count
    missing = [n for n in KEEP if n not in kept]
    if missing:
        sys.exit(f"{path}: no CRD named {', '.join(missing)}")

    out = [HEADER.format(version=version, commit=commit, count=total).rstrip("\n")]
    for name in KEEP:
        out.append("---")
        out.extend(kept[name])
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
