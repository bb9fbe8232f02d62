"""``make up``'s simulator: whether it runs, its ports, and the URLs it stands in for.

Simulated feeds never drive a real venue: a stack whose Insiders API is set to a host off this machine while a
feed URL is left to the simulator is refused (simulated leader trades would be copied with real money)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from common.config import ConfigError, env_bool, env_port, env_str, project_root
from common.grpcauth import is_loopback

SIM_PORTS = {"TT_SIM_RTDS_PORT": 9201, "TT_SIM_CLOB_PORT": 9202, "TT_SIM_DATA_API_PORT": 9203,
             "TT_SIM_INSIDERS_PORT": 9204}
FEED_URLS = ("TT_RTDS_URL", "TT_CLOB_WS_URL", "TT_CLOB_API_URL", "TT_DATA_API_URL")


def simulator_enabled(env: Mapping[str, str], root: Path | None = None) -> bool:
    """Whether the stack runs its simulator: ``TT_STACK_SIMULATOR``, a boolean (unset: on if it exists; blank: off)."""
    wanted = env_bool(env, "TT_STACK_SIMULATOR", "TT_STACK_SIMULATOR" not in env)
    return wanted and ((root or project_root()) / "sim" / "__main__.py").exists()


def simulator_ports(env: Mapping[str, str]) -> dict[str, int]:
    """The simulator's fixed ports, by variable."""
    return {name: env_port(env, name, default) for name, default in SIM_PORTS.items()}


def on_this_machine(url: str) -> bool:
    """Whether ``url``'s host is a loopback name or address (a fake, or a tunnel the operator set up)."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    return bool(host) and is_loopback(host)


def wire_simulator(env: dict[str, str]) -> list[str]:
    """Point every feed URL left unset (and the Insiders API when unset) at the stack's own simulator.

    URLs that are set are kept: the simulator then runs beside them unused. Returns the variables
    wired. When the Insiders API is wired, the simulator also runs its Insiders fake
    (``TT_STACK_SIM_INSIDERS=1``) with ``TT_INSIDERS_API_TOKEN`` (generated when unset). Raises ConfigError
    when a feed would be simulated while the Insiders API is set to a host off this machine.
    """
    host = env_str(env, "TT_SIM_HOST", "127.0.0.1")
    ports = simulator_ports(env)
    urls = {
        "TT_RTDS_URL": f"ws://{host}:{ports['TT_SIM_RTDS_PORT']}",
        "TT_CLOB_WS_URL": f"ws://{host}:{ports['TT_SIM_CLOB_PORT']}/ws/market",
        "TT_CLOB_API_URL": f"http://{host}:{ports['TT_SIM_CLOB_PORT']}",
        "TT_DATA_API_URL": f"http://{host}:{ports['TT_SIM_DATA_API_PORT']}",
        "TT_INSIDERS_API_URL": f"http://{host}:{ports['TT_SIM_INSIDERS_PORT']}",
    }
    wired = [name for name in urls if not env.get(name, "").strip()]
    venue = env.get("TT_INSIDERS_API_URL", "").strip()
    simulated = [name for name in FEED_URLS if name in wired]
    if venue and simulated and not on_this_machine(venue):
        raise ConfigError(f"TT_INSIDERS_API_URL is set to a host off this machine while {', '.join(simulated)} "
                          "would be fed by the simulator: its made-up trades would be copied with real money. "
                          "Set those URLs to the real feeds, or TT_STACK_SIMULATOR=0")
    for name in wired:
        env[name] = urls[name]
    if "TT_INSIDERS_API_URL" in wired:
        env["TT_STACK_SIM_INSIDERS"] = "1"
        if not env.get("TT_INSIDERS_API_TOKEN", "").strip():
            env["TT_INSIDERS_API_TOKEN"] = secrets.token_hex(16)
    return wired
