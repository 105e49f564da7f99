"""The demo's latency tail with weir's tail fixes off and on, interleaved, with the causes.

Run from the repository root::

    python -m bench.tail                          # 3 rounds of off/on at 1x, 20 s feed
    python -m bench.tail --rounds 5 --speed 10 --seconds 60
    python -m bench.tail --variant off=WEIR_GC__FREEZE_WHEN_READY=false --variant on=
    python -m bench.tail --variant g1= \
        --variant parallel=--broker-jvm-option=-XX:+UseParallelGC,--broker-jvm-option=-Xmn192m

Each run is a whole ``weir demo --diagnose`` (``replay.demo``: a fresh Apache Kafka, the
service in a child process, the warm-up, the measured replay) in its own process, with
the variant's environment. The default variants:

- ``off``: ``[gc] freeze_when_ready = false`` and ``[delivery] commit_in_background =
  false`` (the service as it was before these fixes);
- ``on``: the defaults (freeze once warm; the periodic commit beside the fetch loop).

Rounds run every variant once, in a rotated order, so a host that gets busier during the
bench hurts each variant alike; the load average (``os.getloadavg``) is printed before
each run. For each run: e2e p50/p99/p99.9, the p99 of each ``--window-s`` window (flat
or rising), the service's and the harness's GC pauses (count and largest, over the
generations) and loop lag p99/max, and the service's commit p99. Then per variant the
median of the rounds with its spread (min-max). Figures are printed; nothing is asserted.
Each run's ``results.json`` and ``diagnosis.json`` stay under ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

DEFAULT_VARIANTS = (
    "off=WEIR_GC__FREEZE_WHEN_READY=false,WEIR_DELIVERY__COMMIT_IN_BACKGROUND=false",
    "on=",
)


Variant = tuple[str, dict[str, str], list[str]]


def parse_variant(text: str) -> Variant:
    """``name=VAR=value,--demo-arg,...`` (``name=``: no change) as ``(name, environment,
    demo arguments)``: an item starting with ``--`` is an argument of ``weir demo``."""
    name, _, rest = text.partition("=")
    if not name:
        raise ValueError(f"variant {text!r} has no name (expected name=VAR=value,...)")
    env: dict[str, str] = {}
    demo_args: list[str] = []
    for item in filter(None, rest.split(",")):
        if item.startswith("--"):
            demo_args.append(item)
            continue
        var, sep, value = item.partition("=")
        if not sep or not var:
            raise ValueError(f"variant {text!r}: {item!r} is not VAR=value")
        env[var] = value
    return name, env, demo_args


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _run(
    out: Path, env: dict[str, str], demo_args: list[str], args: argparse.Namespace
) -> dict[str, Any] | None:
    cmd = [
        sys.executable,
        "-m",
        "service.cli",
        "demo",
        "--out-dir",
        str(out),
        "--no-progress",
        "--diagnose",
        "--speed",
        args.speed,
        "--seconds",
        str(args.seconds),
        "--window-s",
        str(args.window_s),
        *demo_args,
    ]
    proc = subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    if proc.returncode not in (0, 1) or not (out / "results.json").exists():
        print(f"  run failed (status {proc.returncode}):\n{proc.stderr[-2000:]}", flush=True)
        return None
    result = json.loads((out / "results.json").read_text())
    diagnosis = json.loads((out / "diagnosis.json").read_text())
    return figures(result, diagnosis)


def _worst_pause(part: dict[str, Any] | None) -> tuple[int, float]:
    gens = ((part or {}).get("gc") or {}).get("generations") or {}
    return sum(g["count"] for g in gens.values()), max(
        (g["max_ms"] for g in gens.values()), default=0.0
    )


def figures(result: dict[str, Any], diagnosis: dict[str, Any]) -> dict[str, Any]:
    """The figures one run prints, from its ``results.json`` and ``diagnosis.json``."""
    e2e = result["latency"]["e2e"]["percentiles"]
    service = diagnosis.get("service") or {}
    harness = diagnosis.get("harness") or {}
    s_count, s_max = _worst_pause(service)
    run_gc = diagnosis.get("service_run_gc")
    if run_gc:  # the measured run only, not the start-up and warm-up
        s_count = sum(g["count"] for g in run_gc.values())
        s_max = max((g["max_ms_if_over_1"] or 0.0 for g in run_gc.values()), default=0.0)
    h_count, h_max = _worst_pause(harness)
    return {
        "p50": e2e.get("50"),
        "p99": e2e.get("99"),
        "p999": e2e.get("99.9"),
        "windows_p99": [w["e2e_p99_ms"] for w in diagnosis.get("windows") or []],
        "service_gc": (s_count, s_max),
        "harness_gc": (h_count, h_max),
        "service_lag": ((service.get("loop_lag") or {}).get("p99_ms"),
                        (service.get("loop_lag") or {}).get("max_ms")),
        "harness_lag": ((harness.get("loop_lag") or {}).get("p99_ms"),
                        (harness.get("loop_lag") or {}).get("max_ms")),
        "commit_p99": (service.get("commit") or {}).get("p99_ms"),
        "broker_gc": ((diagnosis.get("broker_gc") or {}).get("count"),
                      (diagnosis.get("broker_gc") or {}).get("max_ms")),
        "service_run_gc": diagnosis.get("service_run_gc"),
    }  # fmt: skip


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def line(name: str, f: dict[str, Any]) -> str:
    """One run's figures on one line."""
    wins = "/".join(_f(v) for v in f["windows_p99"])
    return (
        f"  {name:4} e2e p50 {_f(f['p50'])} p99 {_f(f['p99'])} p99.9 {_f(f['p999'])} ms | "
        f"window p99 {wins} | gc svc {f['service_gc'][0]}x max {_f(f['service_gc'][1])} "
        f"harness {f['harness_gc'][0]}x max {_f(f['harness_gc'][1])} ms | loop lag p99/max "
        f"svc {_f(f['service_lag'][0])}/{_f(f['service_lag'][1])} harness "
        f"{_f(f['harness_lag'][0])}/{_f(f['harness_lag'][1])} ms | commit p99 "
        f"{_f(f['commit_p99'])} ms | broker gc {f['broker_gc'][0]}x max {_f(f['broker_gc'][1])} ms"
    )


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print every run and the medians (module docstring)."""
    p = argparse.ArgumentParser(prog="python -m bench.tail", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--speed", default="1")
    p.add_argument("--seconds", type=float, default=20.0, help="synthetic feed length")
    p.add_argument("--window-s", type=float, default=5.0)
    p.add_argument("--out-dir", type=Path, default=Path("weir-bench-tail"))
    p.add_argument(
        "--variant",
        action="append",
        metavar="NAME=VAR=value,...",
        help="a variant: its environment and weir demo arguments (items starting with --); "
        "repeat; default: off and on, see above",
    )
    args = p.parse_args(argv)
    variants = [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
    print(f"bench.tail: {args.rounds} rounds of {', '.join(n for n, _, _ in variants)} "
          f"at {args.speed}x, {args.seconds:g} s feed", flush=True)  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n, _, _ in variants}
    for r in range(args.rounds):
        shift = r % len(variants)
        for name, env, demo_args in variants[shift:] + variants[:shift]:
            print(f"round {r + 1} {name}: load average {_load()}", flush=True)
            f = _run(args.out_dir / f"r{r + 1}-{name}", env, demo_args, args)
            if f is not None:
                runs[name].append(f)
                print(line(name, f), flush=True)
    print("\nmedian (min-max) over the rounds:")
    for name, fs in runs.items():
        worst_win = [max(v for v in f["windows_p99"] if v is not None) for f in fs
                     if any(v is not None for v in f["windows_p99"])]  # fmt: skip
        print(
            f"  {name:4} runs {len(fs)}  e2e p50 {_spread([f['p50'] for f in fs])}  "
            f"p99 {_spread([f['p99'] for f in fs])}  "
            f"p99.9 {_spread([f['p999'] for f in fs])}  "
            f"worst window p99 {_spread(worst_win)}  "
            f"commit p99 {_spread([f['commit_p99'] for f in fs if f['commit_p99'] is not None])}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
