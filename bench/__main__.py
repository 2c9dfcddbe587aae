"""Messenger's benchmark suite: ``python -m bench SCENARIO... [--stack embedded|production|both]``.

Scenarios (``all`` runs every one but ``data``, in this order):

  relay      the ceiling: the load generator publishes straight through the broker to subscribers
  pipeline   message commands through the handler: stored, delivered; sustained rate, latency at
             fixed rates, the ratio to relay measured in the same run
  fanout     a creator mass-messages a 100,000-member list with 1,000 members online
  connect    authenticated CONNECTs/s, and 10,000 idle connections with presence mirrored
  rest       REST history pages and HTTP sends: requests/s and latency
  data       the pipeline, REST pages, a catch-up of 10,000 unread, first connects and a mass
             message to 100,000, on a seeded database (``python -m bench seed``) and on an empty
             one in the same run, side by side; it starts its own production stacks, one per
             database (``--seed-manifest``; see bench/scenarios/data.py)

``python -m bench seed [--scale 0.01] [--database-url URL]`` is not a scenario: it fills a
database with a realistic dataset (10M messages, 1M users, power-law creators, lists, blocks,
tips, read state) and writes a manifest of the ids a benchmark needs; see bench/seed.py.

Each scenario starts the stack it runs on (on free loopback ports) and stops it afterwards:
``embedded`` is ``messenger serve`` on a fresh SQLite file, ``production`` is Mosquitto with the
plugin, separate handlers, the bridge and the API on MariaDB (database ``messenger_bench``,
created if missing) and Redis. The table goes to stdout, a JSON file to ``--json`` (default
``var/bench/<time>.json``), and ``--plot`` writes a PNG of latency distributions and throughput
over time. ``--quick`` runs each scenario for a few seconds (what the suite's tests do).

    python -m bench pipeline                      # both stacks, relay ceiling included
    python -m bench all --stack production --plot var/bench/all.png
    python -m bench connect --stack production --idle 10000
    python -m bench relay pipeline --quick --stack embedded
    python -m bench seed --scale 0.01 --database-url sqlite:///var/seed.db
    python -m bench data --seed-manifest var/bench/seed-messenger_seed.json

See docs/performance.md for what each figure means and what bounds it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scenarios import Scenario
from bench.stacks import DEFAULT_BENCH_DATABASE_URL, STACKS, StackError, StackOptions, running
from bench.suite import Progress, Result, environment, print_table, write_json, write_plot
from scripts.topology import DEFAULT_REDIS_URL, ROOT


def scenarios() -> dict[str, Scenario]:
    from bench.scenarios import connect, data, fanout, messaging, rest

    found = [
        messaging.RELAY,
        messaging.PIPELINE,
        fanout.SCENARIO,
        connect.SCENARIO,
        rest.SCENARIO,
        data.SCENARIO,
    ]
    return {s.name: s for s in found}


def parser(known: dict[str, Scenario]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("scenarios", nargs="+", metavar="SCENARIO", choices=[*known, "all"])
    p.add_argument("--stack", choices=[*STACKS, "both"], default="both", help="default: both")
    p.add_argument("--quick", action="store_true", help="a few seconds per scenario (smaller counts)")
    p.add_argument("--json", type=Path, help="result file (default: var/bench/<UTC time>.json)")
    p.add_argument("--plot", type=Path, help="also write a PNG: latency distributions, throughput over time")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="default: on a terminal"
    )
    stack = p.add_argument_group("production stack")
    stack.add_argument("--database-url", default=DEFAULT_BENCH_DATABASE_URL)
    stack.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    stack.add_argument("--handlers", type=int, default=2, help="messenger handler processes (default 2)")
    stack.add_argument("--workers", type=int, default=0, help="messenger worker processes (default 0)")
    for scenario in known.values():
        scenario.add_arguments(p.add_argument_group(scenario.name))
    return p


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["seed"]:  # a command of its own, with its own options
        from bench import seed

        return seed.main(given[1:])
    known = scenarios()
    args = parser(known).parse_args(argv)
    from bench.scenarios.data import OwnStacks

    # "all" leaves out the scenarios that need more than a stack (data: a seeded database)
    every = [name for name, s in known.items() if not isinstance(s, OwnStacks)]
    chosen = every if "all" in args.scenarios else list(dict.fromkeys(args.scenarios))
    stacks = list(STACKS) if args.stack == "both" else [args.stack]
    options = StackOptions(
        database_url=args.database_url, redis_url=args.redis_url, handlers=args.handlers, workers=args.workers
    )
    progress = Progress(args.progress)
    started = datetime.now(UTC)
    json_path = args.json or ROOT / "var" / "bench" / f"{started:%Y%m%dT%H%M%SZ}-{'-'.join(chosen)}.json"

    def terminated(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through the stacks' finally blocks

    signal.signal(signal.SIGTERM, terminated)
    print(f"$ python -m bench {' '.join(argv if argv is not None else sys.argv[1:])}", flush=True)
    env = environment()
    results: list[Result] = []
    try:
        for name in chosen:
            scenario = known[name]
            if isinstance(scenario, OwnStacks):  # one result per column, stacks started inside
                found = scenario.run_stacks(args, options, progress)
                progress.finish()
                results.extend(found)
                print_table(found)
                sys.stdout.flush()
                continue
            for stack_name in stacks:
                progress.step(f"{name} on {stack_name}: starting the stack")
                t0 = time.monotonic()
                try:
                    with running(stack_name, options) as stack:
                        result = known[name].run(stack, args, progress)
                except StackError as exc:
                    result = Result(name, stack_name)
                    result.check(f"the stack started ({exc})", False)
                progress.finish()
                result.duration_s = round(time.monotonic() - t0, 1)
                results.append(result)
                print_table([result])
                sys.stdout.flush()
    except KeyboardInterrupt:
        progress.finish()
        print("interrupted: the figures so far follow", file=sys.stderr)
    # one scenario of its own stacks has printed all its columns together already
    if len(results) > 1 and not (len(chosen) == 1 and isinstance(known[chosen[0]], OwnStacks)):
        print("\n==================== all results ====================")
        print_table(results)
    write_json(results, json_path, env)
    print(f"\nresults: {json_path}")
    if args.plot:
        write_plot(results, args.plot)
        print(f"plot: {args.plot}")
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
