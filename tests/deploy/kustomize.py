"""A minimal ``kustomize build`` of the features ``deploy/k8s`` uses, so the manifests are checked offline.

Supported: a kustomization in JSON (``kustomization.yaml`` / ``.yml`` / ``Kustomization``; no YAML parser is
installed), ``resources`` (JSON files; ``List`` objects are expanded like kustomize does), ``namespace``,
``configMapGenerator`` and ``secretGenerator`` (``literals`` and ``envs``) with a name suffix derived from the
content and every reference from a pod template renamed accordingly. Any other field fails loudly, so a
feature added to the kustomization must be added here too. The suffix is not kustomize's hash, only as stable.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator", "secretGenerator"}
GENERATOR_FIELDS = {"name", "literals", "envs"}


class KustomizeError(ValueError):
    """The kustomization uses something this renderer (or kustomize) cannot build."""


def kustomization_file(directory: Path) -> Path:
    """The kustomization file of ``directory`` (the first name kustomize looks for)."""
    found = [directory / n for n in NAMES if (directory / n).is_file()]
    if len(found) != 1:
        raise KustomizeError(f"{directory}: expected exactly one of {', '.join(NAMES)}, found {len(found)}")
    return found[0]


def expand(obj: Obj) -> list[Obj]:
    """``obj``, or the items of a ``*List`` (nested lists too), as kustomize reads a resource file."""
    if str(obj.get("kind", "")).endswith("List"):
        return [leaf for item in obj.get("items") or [] for leaf in expand(item)]
    return [obj]


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=value`` lines; blank lines and ``#`` comments skipped."""
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise KustomizeError(f"env file line {number} has no '=': {raw!r}")
        key, value = line.split("=", 1)
        out[key.strip()] = value
    return out


def _generated(directory: Path, spec: Obj, kind: str) -> Obj:
    unknown = set(spec) - GENERATOR_FIELDS
    if unknown:
        raise KustomizeError(f"{kind} generator {spec.get('name')}: unsupported fields {sorted(unknown)}")
    data: dict[str, str] = {}
    for literal in spec.get("literals", []):
        if "=" not in literal:
            raise KustomizeError(f"literal without '=': {literal!r}")
        key, value = literal.split("=", 1)
        data[key] = value
    for name in spec.get("envs", []):
        data.update(parse_env_file((directory / name).read_text()))
    digest = hashlib.sha256(json.dumps([kind, spec["name"], data], sort_keys=True).encode()).hexdigest()[:10]
    obj: Obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": f"{spec['name']}-{digest}"}}
    if kind == "Secret":
        obj["type"] = "Opaque"
        obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        obj["data"] = data
    return obj


def pod_specs(obj: Obj) -> list[Obj]:
    """The pod spec of a workload (``[]`` for other kinds)."""
    template = obj.get("spec", {}).get("template", {})
    return [template["spec"]] if "spec" in template else []


def _rename_references(pod: Obj, renamed: dict[tuple[str, str], str]) -> None:
    def new(kind: str, name: str) -> str:
        return renamed.get((kind, name), name)

    for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                source["configMapRef"]["name"] = new("ConfigMap", source["configMapRef"]["name"])
            if "secretRef" in source:
                source["secretRef"]["name"] = new("Secret", source["secretRef"]["name"])
        for var in container.get("env", []):
            ref = var.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                ref["configMapKeyRef"]["name"] = new("ConfigMap", ref["configMapKeyRef"]["name"])
            if "secretKeyRef" in ref:
                ref["secretKeyRef"]["name"] = new("Secret", ref["secretKeyRef"]["name"])
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            volume["configMap"]["name"] = new("ConfigMap", volume["configMap"]["name"])
        if "secret" in volume:
            volume["secret"]["secretName"] = new("Secret", volume["secret"]["secretName"])


def build(directory: Path) -> list[Obj]:
    """The objects ``kubectl kustomize directory`` prints, in the order kustomize emits them for our files."""
    path = kustomization_file(directory)
    try:
        kustomization: Obj = _load(path)
    except json.JSONDecodeError as exc:
        raise KustomizeError(f"{path} is not JSON ({exc}); this renderer reads no YAML") from None
    unsupported = set(kustomization) - SUPPORTED
    if unsupported:
        raise KustomizeError(f"{path}: fields this renderer does not implement: {sorted(unsupported)}")
    if kustomization.get("kind") != "Kustomization" or "kustomize.config.k8s.io/" not in kustomization.get(
            "apiVersion", ""):
        raise KustomizeError(f"{path}: not a kustomize.config.k8s.io Kustomization")
    objects: list[Obj] = []
    for resource in kustomization.get("resources", []):
        file = directory / resource
        if not file.is_file():
            raise KustomizeError(f"{path}: resource {resource} is not a file")
        objects += [copy.deepcopy(o) for o in expand(_load(file))]
    renamed: dict[tuple[str, str], str] = {}
    generated: list[Obj] = []
    for key, kind in (("configMapGenerator", "ConfigMap"), ("secretGenerator", "Secret")):
        for spec in kustomization.get(key, []):
            obj = _generated(directory, spec, kind)
            renamed[(kind, spec["name"])] = obj["metadata"]["name"]
            generated.append(obj)
    objects = generated + objects
    for obj in objects:
        for pod in pod_specs(obj):
            _rename_references(pod, renamed)
        if "namespace" in kustomization:
            obj.setdefault("metadata", {})["namespace"] = kustomization["namespace"]
    return objects


def _load(path: Path) -> Any:
    """A manifest: YAML (kustomize's parser), which the generated JSON documents also are."""
    import yaml

    return yaml.safe_load(path.read_text())
