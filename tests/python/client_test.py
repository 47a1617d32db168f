"""The official Kubernetes Python client against oxlet server: create, list with selectors,
watch, patch, delete. Run by tests/python_client.rs with KUBECONFIG set; exits non-zero on the
first failed check."""
import sys
import threading

from kubernetes import client, config, watch


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def main():
    config.load_kube_config()
    v1 = client.CoreV1Api()
    ns = "pyclient"
    v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))

    for i, tier in enumerate(["front", "front", "back"]):
        v1.create_namespaced_config_map(ns, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=f"cm{i}", labels={"tier": tier}),
            data={"index": str(i)}))

    front = v1.list_namespaced_config_map(ns, label_selector="tier=front")
    check(sorted(c.metadata.name for c in front.items) == ["cm0", "cm1"], "label selector")
    named = v1.list_namespaced_config_map(ns, field_selector="metadata.name=cm2")
    check([c.metadata.name for c in named.items] == ["cm2"], "field selector")
    # Only the test's own maps: the root CA publisher adds kube-root-ca.crt to every namespace.
    page = v1.list_namespaced_config_map(ns, limit=2, label_selector="tier")
    check(len(page.items) == 2 and page.metadata._continue, "first page with continue")
    rest = v1.list_namespaced_config_map(ns, limit=2, label_selector="tier", _continue=page.metadata._continue)
    check(len(rest.items) == 1 and not rest.metadata._continue, "last page")

    # Watch from the list's resourceVersion sees a patch and a delete.
    rv = v1.list_namespaced_config_map(ns).metadata.resource_version
    seen = []
    done = threading.Event()

    def watcher():
        w = watch.Watch()
        for ev in w.stream(v1.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=30):
            seen.append((ev["type"], ev["object"].metadata.name))
            if ev["type"] == "DELETED":
                w.stop()
        done.set()

    t = threading.Thread(target=watcher)
    t.start()
    patched = v1.patch_namespaced_config_map("cm0", ns, {"data": {"index": "patched"}})
    check(patched.data["index"] == "patched", "strategic patch result")
    v1.delete_namespaced_config_map("cm1", ns)
    done.wait(30)
    t.join(5)
    check(("MODIFIED", "cm0") in seen, f"watch saw the patch: {seen}")
    check(("DELETED", "cm1") in seen, f"watch saw the delete: {seen}")

    try:
        v1.read_namespaced_config_map("cm1", ns)
        check(False, "deleted object still readable")
    except client.exceptions.ApiException as e:
        check(e.status == 404, f"404 after delete, got {e.status}")

    try:
        v1.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm0")))
        check(False, "duplicate create accepted")
    except client.exceptions.ApiException as e:
        check(e.status == 409, f"409 on duplicate, got {e.status}")
    print("python client: all checks passed")


if __name__ == "__main__":
    main()
