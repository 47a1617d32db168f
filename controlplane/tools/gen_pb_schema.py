#!/usr/bin/env python3
"""Generates controlplane/src/apiserver/protobuf/schema.rs, the protobuf message table the API
server uses to decode `application/vnd.kubernetes.protobuf` request bodies into JSON.

Inputs:
- the k8s-pb crate sources (prost structs: field numbers, wire kinds, repeated/map flags,
  referenced message types);
- k8s.io/api and k8s.io/apimachinery Go sources of the same minor release (upstream message
  names such as `HostIP`, which prost renames `HostIp`; whether a field is a non-pointer
  `omitempty` scalar, whose zero value Go writes on the wire but omits from JSON; inline
  embedded structs; `type X []string` list wrappers such as ExtraValue).

Re-run (from the repository root) after bumping k8s-pb, with checkouts of the Go modules
k8s.io/api and k8s.io/apimachinery at tag v0.35.7 (the release k8s-pb 0.9 was generated from)
in /tmp/k8s-api and /tmp/k8s-apimachinery:

    python3 controlplane/tools/gen_pb_schema.py \
        --k8s-pb ~/.cargo/registry/src/index.crates.io-*/k8s-pb-0.9.0 \
        --api /tmp/k8s-api --apimachinery /tmp/k8s-apimachinery
"""

import argparse
import glob
import os
import re
import sys

# (k8s-pb module path, Go source root key, Go package dir)
PACKAGES = [
    ("api/core/v1", "api", "core/v1"),
    ("api/apps/v1", "api", "apps/v1"),
    ("api/coordination/v1", "api", "coordination/v1"),
    ("api/discovery/v1", "api", "discovery/v1"),
    ("api/events/v1", "api", "events/v1"),
    ("api/certificates/v1", "api", "certificates/v1"),
    ("api/policy/v1", "api", "policy/v1"),
    ("api/rbac/v1", "api", "rbac/v1"),
    ("api/authentication/v1", "api", "authentication/v1"),
    ("api/authorization/v1", "api", "authorization/v1"),
    ("api/autoscaling/v1", "api", "autoscaling/v1"),
    ("apimachinery/pkg/apis/meta/v1", "apimachinery", "pkg/apis/meta/v1"),
    ("apimachinery/pkg/runtime", "apimachinery", "pkg/runtime"),
    ("apimachinery/pkg/api/resource", "apimachinery", "pkg/api/resource"),
    ("apimachinery/pkg/util/intstr", "apimachinery", "pkg/util/intstr"),
]

SCALARS = {
    "string": "String",
    "bytes": "Bytes",
    "bool": "Bool",
    "int32": "Int32",
    "int64": "Int64",
}

STRUCT_RE = re.compile(r"^pub struct (\w+) \{")
ATTR_RE = re.compile(r"^\s*#\[prost\((.*)\)\]\s*$")
FIELD_RE = re.compile(r"^\s*pub (?:r#)?(\w+):\s*(.*)$", re.S)
GO_TYPE_RE = re.compile(r"^type (\w+) (struct \{|\[\]|map\[)?")


def die(msg):
    print(f"gen_pb_schema: {msg}", file=sys.stderr)
    sys.exit(1)


def go_package(root):
    """Go type names, list wrappers and per-struct field facts keyed by protobuf field number."""
    names, list_wrappers, structs = set(), set(), {}
    files = sorted(glob.glob(os.path.join(root, "*.go")))
    if not files:
        die(f"no Go sources in {root}")
    for path in files:
        base = os.path.basename(path)
        if base.endswith("_test.go") or base.startswith("zz_generated") or base.startswith("generated"):
            continue
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        current = None
        for line in lines:
            m = GO_TYPE_RE.match(line)
            if m:
                names.add(m.group(1))
                if m.group(2) == "[]":
                    list_wrappers.add(m.group(1))
                current = m.group(1) if m.group(2) == "struct {" else None
                if current:
                    structs.setdefault(current, {})
                continue
            if current is None:
                continue
            if line.startswith("}"):
                current = None
                continue
            pm = re.search(r'protobuf:"(\w+),(\d+),(\w+)', line)
            if not pm or "`" not in line:
                continue
            decl, tag = line.split("`", 1)
            tokens = decl.split()
            json_m = re.search(r'json:"([^"]*)"', tag)
            json_name, opts = "", []
            if json_m:
                json_name, *opts = json_m.group(1).split(",")
            go_type = tokens[-1] if tokens else ""
            structs[current][int(pm.group(2))] = {
                "pointer": go_type.startswith("*"),
                "omitempty": "omitempty" in opts,
                # An embedded struct tagged `json:""` or `json:",inline"` is flattened in JSON.
                "inline": len(tokens) == 1 and json_m is not None and json_name == "",
            }
    return names, list_wrappers, structs


def parse_attr(attr):
    """(label, scalar-or-None, map key, map value) from a `#[prost(...)]` attribute."""
    tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
    m = re.match(r'btree_map = "(\w+), (\w+)"', attr)
    if m:
        return tag, "map", m.group(1), m.group(2)
    kind = re.match(r"(\w+)", attr).group(1)
    label = "repeated" if ", repeated" in attr else "single"
    return tag, label, kind, None


def resolve(type_text, module):
    """Absolute module path and prost type name of a field's message type."""
    t = type_text.strip().rstrip(",").replace(" ", "").replace("\n", "").replace(",>", ">")
    for wrapper in (
        "::core::option::Option<",
        "::prost::alloc::vec::Vec<",
        "::prost::alloc::boxed::Box<",
        "::prost::alloc::collections::BTreeMap<::prost::alloc::string::String,",
    ):
        while t.startswith(wrapper):
            t = t[len(wrapper):-1]
    parts = t.split("::")
    mod = list(module)
    while parts and parts[0] == "super":
        mod.pop()
        parts.pop(0)
    return mod + parts[:-1], parts[-1]


def parse_k8s_pb(path, module):
    """[(prost struct name, [(tag, snake name, label, kind, map value, ref)])]."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    out, current, attr, pending = [], None, None, None
    for line in lines:
        if current is None:
            m = STRUCT_RE.match(line)
            if m:
                current = (m.group(1), [])
            continue
        if line.startswith("}"):
            out.append(current)
            current = None
            continue
        if pending is not None:
            pending += line
            if pending.rstrip().endswith(",") and pending.count("<") == pending.count(">"):
                finish_field(current, attr, pending, module)
                attr, pending = None, None
            continue
        m = ATTR_RE.match(line)
        if m:
            attr = m.group(1)
            continue
        if attr is not None and FIELD_RE.match(line):
            pending = line
            if pending.rstrip().endswith(",") and pending.count("<") == pending.count(">"):
                finish_field(current, attr, pending, module)
                attr, pending = None, None
    return out


def finish_field(current, attr, text, module):
    m = FIELD_RE.match(text)
    name, type_text = m.group(1), m.group(2)
    tag, label, kind, value = parse_attr(attr)
    ref = None
    if kind == "message" or value == "message":
        ref = resolve(type_text, module)
    current[1].append((tag, name, label, kind, value, ref))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k8s-pb", required=True)
    ap.add_argument("--api", required=True)
    ap.add_argument("--apimachinery", required=True)
    ap.add_argument("--out", default="controlplane/src/apiserver/protobuf/schema.rs")
    args = ap.parse_args()
    roots = {"api": args.api, "apimachinery": args.apimachinery}

    go = {}
    raw = {}
    for pb_mod, root, go_dir in PACKAGES:
        module = tuple(pb_mod.split("/"))
        go[module] = go_package(os.path.join(roots[root], go_dir))
        raw[module] = parse_k8s_pb(os.path.join(args.k8s_pb, "src", pb_mod, "mod.rs"), module)

    def upstream_name(module, prost_name):
        names = go[module][0]
        exact = [n for n in names if n == prost_name]
        folded = [n for n in names if n.lower() == prost_name.lower()]
        if exact or len(folded) == 1:
            return (exact or folded)[0]
        die(f"no Go type for {'/'.join(module)}.{prost_name}: {folded}")

    def full_name(module, prost_name):
        return "io.k8s." + ".".join(module) + "." + upstream_name(module, prost_name)

    def ty(kind, ref):
        if kind == "message":
            mod, name = ref
            if tuple(mod) not in go:
                die(f"reference outside the listed packages: {'/'.join(mod)}.{name}")
            return f'T::Message("{full_name(tuple(mod), name)}")'
        if kind not in SCALARS:
            die(f"unsupported field kind {kind}")
        return f"T::{SCALARS[kind]}"

    messages = []
    for module, structs in raw.items():
        _, list_wrappers, go_structs = go[module]
        for prost_name, fields in structs:
            go_name = upstream_name(module, prost_name)
            facts = go_structs.get(go_name, {})
            rows = []
            for tag, name, label, kind, value, ref in fields:
                fact = facts.get(tag)
                if fact is None and go_name not in list_wrappers and go_structs.get(go_name):
                    print(f"warning: no Go field {go_name}#{tag} ({name})", file=sys.stderr)
                fact = fact or {"pointer": True, "omitempty": False, "inline": False}
                if label == "map":
                    shape = f"S::Map({ty(kind, None)}, {ty(value, ref)})"
                elif label == "repeated":
                    shape = f"S::Repeated({ty(kind, ref)})"
                else:
                    shape = f"S::Single({ty(kind, ref)})"
                omit_zero = label == "single" and kind != "message" and fact["omitempty"] and not fact["pointer"]
                flags = []
                if omit_zero:
                    flags.append("OMIT_ZERO")
                if fact["inline"]:
                    flags.append("INLINE")
                rows.append(
                    f'F {{ tag: {tag}, name: "{name}", shape: {shape}, flags: {"|".join(flags) or "0"} }},'
                )
            messages.append((full_name(module, prost_name), go_name in list_wrappers, rows))
    messages.sort(key=lambda m: m[0].encode())

    out = [
        "// @generated by controlplane/tools/gen_pb_schema.py from k8s-pb 0.9 and k8s.io/api,",
        "// k8s.io/apimachinery v0.35; do not edit. Field numbers and wire kinds are Kubernetes'",
        "// generated.proto facts; see the script for how to re-run it.",
        "",
        "use super::{Field as F, Message, Shape as S, Ty as T, INLINE, OMIT_ZERO};",
        "",
        "/// Every message of the served packages, sorted by full name.",
        "pub(super) static MESSAGES: &[Message] = &[",
    ]
    for name, list_wrapper, rows in messages:
        out.append(f'Message {{ name: "{name}", list_wrapper: {str(list_wrapper).lower()}, fields: &[')
        out.extend("    " + r for r in rows)
        out.append("] },")
    out.append("];")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {len(messages)} messages to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
