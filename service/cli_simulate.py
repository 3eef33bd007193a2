"""`cameofarm simulate`: capacity planning from this farm's recorded stage calls."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from cameofarm.service.cli_common import Ctx, fail


@click.command()
@click.option("--gpus", type=click.IntRange(1, 1_000_000), default=1000, show_default=True)
@click.option(
    "--plus-rate",
    type=click.FloatRange(0, 10_000_000),
    default=1000.0,
    show_default=True,
    help="Plus jobs submitted per hour (Poisson arrivals).",
)
@click.option(
    "--pro-rate",
    type=click.FloatRange(0, 10_000_000),
    default=100.0,
    show_default=True,
    help="Pro jobs submitted per hour (Poisson arrivals).",
)
@click.option("--hours", type=click.FloatRange(0.01, 1000), default=1.0, show_default=True)
@click.option(
    "--cost-scale",
    type=click.FloatRange(0.0001, 1000),
    default=1.0,
    show_default=True,
    help="Multiplies every recorded second (stage calls, and the time a job holds its slot "
    "outside them): 0.1 models nodes ten times faster than the machine that recorded them.",
)
@click.option(
    "--customers",
    type=click.IntRange(1, 100_000),
    default=20,
    show_default=True,
    help="Customers the jobs come from (the policy shares slots between them).",
)
@click.option(
    "--max-running",
    type=click.IntRange(1, 10_000_000),
    default=None,
    help="Jobs running at once, farm-wide (default: the config's scheduler.max_running_jobs "
    "scaled from its pools' GPUs to --gpus).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default="simulate.png",
    show_default=True,
    help="Where to write the plot (PNG): queues, running jobs and GPU busy over time, and "
    "each tier's queue waits.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.pass_obj
def simulate(
    obj: Ctx,
    gpus: int,
    plus_rate: float,
    pro_rate: float,
    hours: float,
    cost_scale: float,
    customers: int,
    max_running: int | None,
    seed: int,
    plot_path: str,
    as_json: bool,
) -> None:
    """Simulate a farm of --gpus GPUs under Plus and Pro load for --hours, and print GPU busy
    %, each tier's queue wait p50/p95 and jobs per hour, with a plot.

    \b
    Jobs are dispatched by the farm's real policy. Each one replays the stage calls of a job
    this farm recorded (every `cameofarm bench` or production job that succeeded on its first
    attempt), so run `cameofarm bench --plus 4 --pro 1` first, on the hardware you plan for
    (or scale with --cost-scale). The GPUs are split between the stage pools by the load each
    carries. Read-only: it needs the farm's database, and writes only the plot.
    """
    from cameofarm.cluster.capacity import (
        SimulationError,
        plan_farm,
        plot_simulation,
        recorded_costs,
        report_lines,
    )
    from cameofarm.cluster.capacity import simulate as run_simulation
    from cameofarm.storage.db import Database, default_sqlite_url

    config = obj.config
    if not (Path(config.data_dir) / "cameofarm.db").exists() and not config.database.url:
        fail(
            f"no farm at {config.data_dir}: run `cameofarm simulate` in the farm's folder (after "
            "`cameofarm bench --plus 4 --pro 1` recorded stage calls) or point "
            "CAMEOFARM__DATA_DIR (or --config) at it"
        )
    rates = {"plus": plus_rate, "pro": pro_rate}
    rates = {tier: rate for tier, rate in rates.items() if rate > 0}
    if not rates:
        fail("give --plus-rate or --pro-rate above 0")
    for tier in rates:
        if tier not in config.tiers:
            fail(f"this farm has no {tier} tier (its tiers: {', '.join(config.tiers)})")
    db = Database(config.database.url or default_sqlite_url(config.data_dir))
    try:
        costs = recorded_costs(db)
    finally:
        db.dispose()
    missing = [tier for tier in rates if not costs.get(tier)]
    if missing:
        fail(
            f"this farm has recorded no {' or '.join(missing)} job that succeeded on its first "
            "attempt: run `cameofarm bench --plus 4 --pro 1` (it records every stage call) "
            "and simulate again"
        )
    try:
        plan = plan_farm(config, costs, rates, gpus, max_running)
    except SimulationError as exc:
        fail(str(exc))
    began = time.monotonic()
    shown = [-1]

    def progress(fraction: float) -> None:
        tenth = int(fraction * 10)
        if tenth > shown[0] and not as_json:
            shown[0] = tenth
            click.echo(f"  simulated {fraction * hours:.2f} of {hours:g} h", err=True)

    result = run_simulation(
        plan,
        costs,
        rates,
        hours,
        customers=customers,
        seed=seed,
        tick_seconds=config.scheduler.tick_seconds,
        cost_scale=cost_scale,
        progress=progress if sys.stderr.isatty() or hours >= 1 else lambda _f: None,
    )
    result.seconds_taken = time.monotonic() - began
    recorded = ", ".join(f"{len(costs[t])} {t}" for t in rates)
    note = f"{recorded} recorded jobs of this farm" + (
        f", every second × {cost_scale:g}" if cost_scale != 1 else ""
    )
    plotted = plot_simulation(result, plot_path)
    if as_json:
        figures = result.to_json()
        figures.update(plot=str(plotted), costs=note, seconds_taken=round(result.seconds_taken, 2))
        click.echo(json.dumps(figures, indent=2))
        return
    for line in report_lines(result, rates, note):
        click.echo(line)
    click.echo(f"plot: {plotted} (simulated in {result.seconds_taken:.2f} s)")
