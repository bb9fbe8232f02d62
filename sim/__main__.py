"""``python -m sim``: run the simulated Polymarket standalone on fixed loopback ports (for the demo).

Ports come from ``TT_SIM_RTDS_PORT`` (9201), ``TT_SIM_CLOB_PORT`` (9202), ``TT_SIM_DATA_API_PORT``
(9203) on ``TT_SIM_HOST`` (127.0.0.1); the URLs to give ingest are printed as ``export`` lines.
Options: ``--replay FILE [--speed X]`` replays a capture; ``--demo-leaders 0x…,0x…`` generates
trades of those wallets (``--demo-rate`` per second) among random noise (``--noise-rate``).
``--insiders`` also starts the Insiders API fake (``sim/insiders.py``) filling against the same
books. ``python -m sim load --port P --rate R --duration S --leaders-file F`` is the benchmark flood.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from common.config import env_port, env_str


async def _demo(sim: Any, leaders: list[str], rate: float, noise: float) -> None:
    rng = random.Random(1)
    markets = [sim.add_market(slug=f"demo-market-{i}", event_slug=f"demo-event-{i}",
                              title=f"Demo market {i}?") for i in range(3)]
    total = rate + noise
    while True:
        await asyncio.sleep(rng.expovariate(total) if total > 0 else 3600)
        market = rng.choice(markets)
        token = rng.choice(market.tokens)
        side = rng.choice(("BUY", "SELL"))
        fills = sim.books.consume(token, side, rng.choice((5, 10, 20)))
        if not fills:
            bids, asks = sim.books.levels(token)
            sim.books.set_book(token, bids=[(p, s * 2) for p, s in bids] or [("0.45", "100")],
                               asks=[(p, s * 2) for p, s in asks] or [("0.55", "100")])
            continue
        price, size = fills[0]
        wallet = rng.choice(leaders) if leaders and rng.random() < rate / total else "0x" + rng.randbytes(20).hex()
        sim.trade(wallet, market=market, token=token, side=side, price=price, size=size)


async def _serve(args: argparse.Namespace) -> int:
    from sim.polymarket import PolymarketSim
    from sim.polymarket.replay import load_capture, replay

    env = os.environ
    host = env_str(env, "TT_SIM_HOST", "127.0.0.1")
    sim = await PolymarketSim().start(host, rtds_port=env_port(env, "TT_SIM_RTDS_PORT", 9201),
                                      clob_port=env_port(env, "TT_SIM_CLOB_PORT", 9202),
                                      data_port=env_port(env, "TT_SIM_DATA_API_PORT", 9203))
    sim.data.strict_user_agent = not args.lenient_user_agent
    for key, value in sim.env().items():
        print(f"export {key}={value}", flush=True)
    insiders: Any = None
    if args.insiders:
        from sim.insiders import InsidersFake  # fills against the same books the CLOB feed publishes

        token = env_str(env, "TT_INSIDERS_API_TOKEN", "insiders-demo-token")
        insiders = InsidersFake(sim.books, token=token, host=host,
                                port=env_port(env, "TT_SIM_INSIDERS_PORT", 9204))
        sim.venue = insiders.holdings
        print(f"export TT_INSIDERS_API_URL={await insiders.start()}", flush=True)
        print(f"export TT_INSIDERS_API_TOKEN={token}", flush=True)
    tasks: list[asyncio.Task[Any]] = []
    if args.replay:
        items = load_capture(args.replay)
        tasks.append(asyncio.create_task(replay(sim, items, speed=args.speed)))
    leaders = [w.strip().lower() for w in (args.demo_leaders or "").split(",") if w.strip()]
    if leaders or args.noise_rate > 0:
        tasks.append(asyncio.create_task(_demo(sim, leaders, args.demo_rate, args.noise_rate)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(BaseException):
            await task
    if insiders is not None:
        await insiders.stop()
    await sim.stop()
    return 0


async def _load(args: argparse.Namespace) -> int:
    from sim.polymarket.load import run_load
    from sim.polymarket.rtds import RtdsServer

    server = RtdsServer()
    port = await server.start("127.0.0.1", args.port)
    print(orjson.dumps({"port": port}).decode(), flush=True)
    leaders: list[str] = []
    if args.leaders_file:
        text = await asyncio.to_thread(Path(args.leaders_file).read_text)
        leaders = [line.strip() for line in text.splitlines() if line.strip()]
    seq = 1
    durations = args.durations or [args.duration] * len(args.rate)
    for rate, duration in zip(args.rate, durations, strict=False):
        result = await run_load(server, rate_per_s=rate, duration_s=duration, leaders=leaders,
                                followed_share=args.followed_share, start_seq=seq)
        seq = result["next_seq"]
        print(orjson.dumps({"rate": rate, **result}).decode(), flush=True)
    await asyncio.sleep(args.linger)
    await server.stop()
    return 0


def main(argv: list[str]) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m sim")
    sub = parser.add_subparsers(dest="cmd")
    load = sub.add_parser("load", help="RTDS flood for benchmarks")
    load.add_argument("--port", type=int, default=0)
    load.add_argument("--rate", type=float, nargs="+", default=[2000.0], help="frames/s, one phase per value")
    load.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    load.add_argument("--durations", type=float, nargs="*", default=[], help="seconds of each phase")
    load.add_argument("--followed-share", type=float, default=0.05)
    load.add_argument("--leaders-file", default="")
    load.add_argument("--linger", type=float, default=2.0)
    parser.add_argument("--replay", default="", help="capture to replay (JSON array or JSON lines)")
    parser.add_argument("--speed", type=float, default=1.0, help="replay speed factor (0 = as fast as possible)")
    parser.add_argument("--demo-leaders", default=env_str(os.environ, "TT_SIM_DEMO_LEADERS"))
    parser.add_argument("--demo-rate", type=float, default=0.2, help="leader trades per second")
    parser.add_argument("--noise-rate", type=float, default=0.0, help="other wallets' trades per second")
    parser.add_argument("--lenient-user-agent", action="store_true", help="accept default HTTP client agents")
    parser.add_argument("--insiders", action="store_true",
                        help="also run the Insiders API fake (TT_SIM_INSIDERS_PORT, 9204) on the same books")
    args = parser.parse_args(argv)
    import uvloop

    return int(uvloop.run(_load(args) if args.cmd == "load" else _serve(args)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
