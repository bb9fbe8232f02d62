"""The Envoy config of a deployment (compose, Kubernetes), rendered before Envoy starts in its own container.

``python -m tools.deploy.envoy --out /etc/envoy/envoy.yaml`` runs in the application image (a compose one-shot
service, a Kubernetes init container) and writes to a volume it shares with Envoy's image: the descriptor set,
copied next to the config (Envoy's image has none), and the config rendered from the same template and
settings as ``make up`` (``tools.envoy_config``: ``CONTROL_API_TOKEN``, ``TT_GATEWAY_*``,
``TT_CONTROL_GRPC_HOST`` / ``_PORT``), mode 600. One difference: in a deployment ``TT_CONTROL_GRPC_HOST`` is a
name (control's Service), which Envoy's STATIC cluster cannot take, so the control cluster resolves it
(STRICT_DNS) instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from common.config import ConfigError
from tools import envoy_config

DESCRIPTOR_NAME = "tradingtools.pb"
_STATIC = "\n    type: STATIC\n"
_DNS = "\n    type: STRICT_DNS\n    dns_lookup_family: V4_PREFERRED\n"


def is_address(host: str) -> bool:
    """True for an IPv4/IPv6 address (Envoy's STATIC clusters take nothing else)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def deploy_template(control_host: str, template: str) -> str:
    """``template`` with the control cluster resolving ``control_host`` by DNS when it is a name."""
    if is_address(control_host):
        return template
    if template.count(_STATIC) != 1:
        raise ConfigError(f"{envoy_config.TEMPLATE.name} no longer has exactly one STATIC cluster (control): "
                          "update tools/deploy/envoy.py")
    return template.replace(_STATIC, _DNS)


def write_deploy_config(env: Mapping[str, str], out: Path) -> Path:
    """Copy the descriptor set next to ``out`` and render the config into ``out``; returns ``out``."""
    settings = envoy_config.GatewaySettings.from_env(env)
    if not settings.descriptor_path.is_file():
        raise ConfigError(f"descriptor set {settings.descriptor_path} is missing (TT_GATEWAY_DESCRIPTOR)")
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor = out.parent / DESCRIPTOR_NAME
    if settings.descriptor_path.resolve() != descriptor.resolve():
        shutil.copyfile(settings.descriptor_path, descriptor)
        os.chmod(descriptor, 0o644)
    settings = dataclasses.replace(settings, descriptor_path=descriptor)
    template = deploy_template(settings.control_host, envoy_config.TEMPLATE.read_text())
    return envoy_config.write(settings, out, template)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: render from the environment; exit 2 naming the setting at fault."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the config file Envoy's container reads")
    args = parser.parse_args(argv)
    try:
        path = write_deploy_config(os.environ, args.out)
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"rendered {path} (descriptor set beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
