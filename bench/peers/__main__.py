"""``python -m bench.peers``: run the side-by-side and write JSON, markdown and a plot.

python -m bench.peers --out build/peers                     # everything, 3 repeats
python -m bench.peers --out build/peers --repeats 1 --contenders weir,echo --seconds-1x 20
python -m bench.peers --report build/peers                  # redraw from peers.json
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from bench.peers.base import CONTENDERS, LOOPS, add_weir_variant

DEFAULT_FEED = Path(__file__).resolve().parents[3] / "shared" / "feeds" / "binance"
DEFAULT_FEED = DEFAULT_FEED / "btcusdt_usdm_20240808.gz"


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown contender(s) {', '.join(unknown)}; known: {', '.join(CONTENDERS)}"
        )
    return names


def _variants(items: list[str]) -> dict[str, dict[str, str]]:
    """``--weir-variant`` values, each registered as a contender (``add_weir_variant``)."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        name, sep, rest = item.partition(":")
        settings = _weir_env([s for s in rest.split(",") if s]) if sep else {}
        try:
            add_weir_variant(name, settings)
        except ValueError as exc:
            raise SystemExit(f"--weir-variant {item!r}: {exc}") from exc
        out[name] = settings
    return out


def _pythons(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or name not in CONTENDERS:
            raise SystemExit(
                f"--python wants NAME=INTERPRETER with NAME in {', '.join(CONTENDERS)}"
            )
        out[name] = path
    return out


def _weir_env(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("WEIR_"):
            raise SystemExit(f"--weir-setting wants WEIR_SECTION__KEY=VALUE, got {item!r}")
        out[name] = value
    return out


SCENARIOS = ("overload", "mixed", "heavy", "scale")


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}"
        )
    return names


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        vals = ()
    if not vals or any(not v > 0 for v in vals):
        raise argparse.ArgumentTypeError(f"{flag} wants numbers > 0, comma-separated, got {text!r}")
    return vals


def _factor(text: str) -> float:
    try:
        val = float(text)
    except ValueError:
        val = -1.0
    if not val >= 0:
        raise argparse.ArgumentTypeError(f"wants a number >= 0, got {text!r}")
    return val


def _two_budgets(text: str) -> tuple[float, float]:
    vals = _floats(text, "--mixed-budgets-ms")
    if len(vals) != 2 or vals[0] >= vals[1]:
        raise argparse.ArgumentTypeError(
            f"--mixed-budgets-ms wants TIGHT,LOOSE with TIGHT < LOOSE, got {text!r}"
        )
    return vals[0], vals[1]


def _workers(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        vals = ()
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"--workers wants integers >= 1, got {text!r}")
    return vals


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m bench.peers",
        description="Benchmark weir side by side with a naive aiokafka loop, a fixed-window "
        "batcher, Faust, Quix Streams and the echo floor through one Apache Kafka.",
    )
    p.add_argument("--out", type=Path, default=Path("build/peers"), help="output directory")
    p.add_argument("--feed", type=Path, default=DEFAULT_FEED, help="feed (.parquet) or Binance .gz")
    p.add_argument(
        "--contenders",
        default="",
        help="comma-separated names (default: all, with any --weir-variant)",
    )
    p.add_argument(
        "--weir-variant",
        action="append",
        default=[],
        metavar="NAME:WEIR_X__Y=V[,WEIR_X__Z=V]",
        help="another configuration of weir, measured side by side as contender NAME",
    )
    p.add_argument("--repeats", type=int, default=3, help="repeats (spread: min/median/max)")
    p.add_argument("--budget-ms", type=float, default=5.0, help="SLO budget (weir's default)")
    p.add_argument("--seconds-1x", type=float, default=60.0, help="feed prefix at 1x, s")
    p.add_argument("--seconds-10x", type=float, default=345.0, help="feed prefix at 10x, s")
    p.add_argument("--step-s", type=float, default=10.0, help="seconds per ramp step")
    p.add_argument("--ramp-start", type=float, default=500.0, help="first ramp rate, events/s")
    p.add_argument("--ramp-factor", type=float, default=2.0, help="rate multiplier per step")
    p.add_argument("--ramp-max", type=float, default=64_000.0, help="highest ramp rate")
    p.add_argument("--refine", type=int, default=1, help="bisection steps after the ramp")
    p.add_argument("--warmup-events", type=int, default=3000)
    p.add_argument("--warmup-rate", type=float, default=1000.0)
    p.add_argument(
        "--broker-warmup-s",
        type=float,
        default=30.0,
        help="seconds of load through the echo before the first measured trial, so a fresh "
        "broker JVM is not still compiling while the first contender is measured (0: none)",
    )
    p.add_argument(
        "--broker-warmup-rate", type=float, default=2000.0, help="that load's rate, events/s"
    )
    p.add_argument("--partitions", type=int, default=1, help="partitions of every topic")
    p.add_argument("--bootstrap", help="use this Kafka instead of starting one")
    p.add_argument("--loop", choices=LOOPS, default="uvloop")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--max-wait-ms", type=float, default=1.0, help="fixed-window / Faust wait")
    p.add_argument(
        "--profile",
        type=lambda s: _names(s) if s else (),
        default=("weir",),
        help="contenders to profile with py-spy at their max rate ('' for none)",
    )
    p.add_argument("--profile-s", type=float, default=15.0)
    p.add_argument(
        "--python",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="interpreter per contender",
    )
    p.add_argument(
        "--weir-setting",
        action="append",
        default=[],
        metavar="WEIR_X__Y=V",
        help="a settings override for the weir contenders only (diagnostics; default none)",
    )
    p.add_argument(
        "--inproc-events",
        type=int,
        default=40_000,
        help="events for the in-process decision-path measurement (0: skip)",
    )
    p.add_argument(
        "--scenarios",
        type=_scenarios,
        default=SCENARIOS,
        help=f"scenarios after the curve, comma-separated ({','.join(SCENARIOS)}; '' for none)",
    )
    p.add_argument(
        "--overload",
        type=lambda s: _floats(s, "--overload"),
        default=(1.5, 3.0),
        help="overload factors x each contender's max sustainable rate",
    )
    p.add_argument("--overload-s", type=float, default=30.0, help="seconds per overload trial")
    p.add_argument(
        "--overload-base",
        choices=("own", "common"),
        default="own",
        help="what the overload factors multiply: each contender's own max sustainable rate "
        "(own), or the best peer's, the same offered load for every contender (common: the "
        "harness's and the broker's CPU grow with the offered rate on a shared host)",
    )
    p.add_argument(
        "--overload-bundle",
        default="",
        help="the model bundle of the overload scenario (default: --bundle's, overloaded at "
        "multiples of the curve's rates); another bundle is ramped first, interleaved, for "
        "each contender's capacity with it",
    )
    p.add_argument(
        "--mixed-budgets-ms",
        type=_two_budgets,
        default=(5.0, 100.0),
        metavar="TIGHT,LOOSE",
        help="budgets of the mixed-deadline scenario's two input topics",
    )
    p.add_argument("--mixed-speed", type=float, default=10.0, help="mixed scenario feed speed")
    p.add_argument("--mixed-s", type=float, default=60.0, help="mixed scenario seconds")
    p.add_argument("--tight-share", type=float, default=0.5, help="share of tight-topic events")
    p.add_argument(
        "--mixed-overload",
        type=_factor,
        default=1.5,
        help="the mixed scenario again at this x each contender's max sustainable rate with "
        "the mixed bundle (measured by the overload scenario with --overload-bundle equal "
        "to --mixed-bundle); 0: not run",
    )
    p.add_argument(
        "--mixed-bundle",
        default="",
        help="the model bundle of the mixed-deadline scenario (default: --bundle's)",
    )
    p.add_argument(
        "--bundle",
        default="",
        help="the model bundle every contender serves (default: the committed bundle)",
    )
    p.add_argument(
        "--heavy-bundle", default="", help="a costlier bundle for the heavy-model scenario"
    )
    p.add_argument(
        "--workers",
        type=_workers,
        default=(1, 2),
        help="weir worker processes for the scale-out ramp, comma-separated (e.g. 1,2)",
    )
    p.add_argument("--report", type=Path, metavar="DIR", help="only redraw DIR/peers.json")
    return p


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run (or redraw) and print the table."""
    args = build_parser().parse_args(argv)
    # SIGTERM (and SIGINT even where a shell started us with it ignored) stop the run the
    # way Ctrl-C does: contender processes and the broker are stopped on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    from bench.peers.report import render_markdown, write_all
    from bench.peers.results import decode_result, summarize
    from bench.peers.verdict import checks_of, curve_rates

    if args.report is not None:
        result = decode_result((args.report / "peers.json").read_bytes())
        for name, settings in (result.params.get("weir_variants") or {}).items():
            add_weir_variant(name, settings)
        result.summary = summarize(result.runs, curve_rates(result.curve, result.points))
        result.checks = checks_of(result)
        paths = write_all(result, args.report)
    else:
        from bench.peers.harness import run_bench
        from bench.peers.session import Options

        variants = _variants(args.weir_variant)
        try:
            contenders = _names(args.contenders) if args.contenders else tuple(CONTENDERS)
        except argparse.ArgumentTypeError as exc:
            raise SystemExit(f"--contenders: {exc}") from exc
        opts = Options(
            out=args.out,
            feed=args.feed,
            contenders=contenders,
            weir_variants=variants,
            repeats=args.repeats,
            budget_ms=args.budget_ms,
            seconds_1x=args.seconds_1x,
            seconds_10x=args.seconds_10x,
            step_s=args.step_s,
            ramp_start=args.ramp_start,
            ramp_factor=args.ramp_factor,
            ramp_max=args.ramp_max,
            refine=args.refine,
            warmup_events=args.warmup_events,
            warmup_rate=args.warmup_rate,
            broker_warmup_s=args.broker_warmup_s,
            broker_warmup_rate=args.broker_warmup_rate,
            partitions=args.partitions,
            bootstrap=args.bootstrap,
            loop=args.loop,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            profile=args.profile,
            profile_s=args.profile_s,
            python=_pythons(args.python),
            weir_env=_weir_env(args.weir_setting),
            inproc_events=args.inproc_events,
            scenarios=args.scenarios,
            overload=args.overload,
            overload_s=args.overload_s,
            overload_base=args.overload_base,
            overload_bundle=args.overload_bundle,
            mixed_budgets_ms=args.mixed_budgets_ms,
            mixed_speed=args.mixed_speed,
            mixed_s=args.mixed_s,
            tight_share=args.tight_share,
            mixed_overload=args.mixed_overload,
            bundle=args.bundle,
            heavy_bundle=args.heavy_bundle,
            mixed_bundle=args.mixed_bundle,
            workers=args.workers,
        )
        result = run_bench(opts)
        paths = write_all(result, args.out)
    print(render_markdown(result))
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
