"""Start-up time of the ``cliplab`` command line: ``--help``, ``X --help`` for every command and a usage error.

Each case is a fresh ``python -m cliplab ...`` subprocess (the user's experience, interpreter start included);
the median of ``--repeat`` runs is printed in seconds, beside the baseline ``python -c pass`` on the same
interpreter (named, same runs) and the ratio case / baseline. The goal (issue 24): every case under 1.5 s on
an idle machine; the parsers import no torch, so a case costs the interpreter plus argparse and the
``cliplab.cli`` modules. ``--importtime`` also lists the ten slowest imports of ``cliplab --help``.

    python benchmarks/cli_startup.py [--repeat 5] [--importtime]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
GOAL_S = 1.5


def cases() -> list[tuple[str, list[str]]]:
    sys.path.insert(0, SRC)
    from cliplab.cli.commands import COMMANDS

    out = [("cliplab --help", ["--help"])]
    out += [(f"cliplab {c.name} --help", [c.name, "--help"]) for c in COMMANDS]
    out += [("usage error (adapt --shots 0)", ["adapt", "builtin:shapes", "shapes", "--shots", "0"])]
    out += [("unknown command", ["nope"])]
    return out


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t0


def median_of(argv: list[str], env: dict[str, str], repeat: int) -> float:
    return statistics.median(timed(argv, env) for _ in range(repeat))


def importtime(env: dict[str, str]) -> None:
    """The slowest imports (cumulative microseconds) of ``cliplab --help``."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cliplab", "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    rows = []
    for line in run.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    print("\nslowest imports of `cliplab --help` (cumulative µs):")
    for us, name in sorted(rows, reverse=True)[:10]:
        print(f"  {us:>9}  {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per case (median; default 5)")
    ap.add_argument("--importtime", action="store_true", help="list the slowest imports of `cliplab --help`")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    base = median_of([sys.executable, "-c", "pass"], env, args.repeat)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; "
        f"median of {args.repeat} runs"
    )
    print(f"{'case':<36} {'seconds':>8} {'× python -c pass':>17}")
    print(f"{'python -c pass (baseline)':<36} {base:>8.3f} {1.0:>17.1f}")
    worst = 0.0
    for name, argv in cases():
        t = median_of([sys.executable, "-m", "cliplab", *argv], env, args.repeat)
        worst = max(worst, t)
        print(f"{name:<36} {t:>8.3f} {t / base:>17.1f}")
    print(
        f"\nslowest case {worst:.3f} s (goal < {GOAL_S} s on an idle machine): {'met' if worst < GOAL_S else 'NOT met'}"
    )
    if args.importtime:
        importtime(env)


if __name__ == "__main__":
    main()
