"""`cameofarm batch`: submit a manifest of render requests and follow it to its results."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import click
from cameofarm.service.areas.base import ApiError
from cameofarm.service.cli_common import Ctx, fail, json_option, show

# How a row's job ends up in the progress bar, in the bar's order.
_PARTS = (("SUCCEEDED", "done"), ("RUNNING", "running"), ("FAILED", "failed"))


@click.group()
def batch() -> None:
    """Batches: a CSV or JSONL manifest of render requests, checked as a whole and queued at
    once.

    \b
    A row: cameo (ids separated by ;), script (a template: {column} is filled from the row's
    other columns, {{ and }} for braces), and optionally tier, scene, prompt, background,
    language, captions (burned: drawn into the video too), output (the video's name) and
    client_token. Rows are numbered as a spreadsheet shows them (the CSV header is row 1).
    """


def _progress_line(status: dict[str, Any], width: int = 30) -> str:
    counts, total = status["counts"], max(1, status["jobs"])
    bar = ""
    for key, mark in (("SUCCEEDED", "#"), ("FAILED", "x"), ("CANCELLED", "-"), ("RUNNING", ">")):
        bar += mark * round(width * counts.get(key, 0) / total)
    bar = (bar + "." * width)[:width]
    parts = [f"{counts.get(k, 0)} {name}" for k, name in _PARTS]
    parts.append(f"{counts.get('QUEUED', 0)} queued")
    if counts.get("CANCELLED"):
        parts.append(f"{counts['CANCELLED']} cancelled")
    eta = status.get("eta_s")
    left = f", ETA {eta / 60:.1f} min" if eta is not None and not status["done"] else ""
    return f"{status['batch_id']} [{bar}] {', '.join(parts)}{left}"


@batch.command("submit")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Queue the rows that pass their checks and list the others (default: a bad row "
    "stops the whole batch and nothing is queued).",
)
@json_option
@click.pass_obj
def submit(obj: Ctx, manifest: str, skip_invalid: bool, as_json: bool) -> None:
    """Check every row of MANIFEST (.csv or .jsonl), then queue them. Submitting the same file
    again answers with the same batch and queues nothing new."""
    from cameofarm.service.areas.batches import BatchRefused

    try:
        out = obj.client().submit_batch(manifest, skip_invalid)
    except BatchRefused as exc:
        for p in exc.problems:
            click.echo(f"  row {p.row}: {p.reason}", err=True)
        fail(exc.message)
    except ApiError as exc:
        fail(exc.message)
    again = " (this file was submitted before: the same batch)" if out.get("replayed") else ""
    text = f"batch {out['batch_id']}: {out['jobs']} jobs of {out['rows']} rows{again}"
    for skipped in out.get("skipped", []):
        text += f"\n  skipped row {skipped['row']}: {skipped['reason']}"
    show(out, as_json, text)


@batch.command("status")
@click.argument("batch_id")
@json_option
@click.pass_obj
def status(obj: Ctx, batch_id: str, as_json: bool) -> None:
    """Show how far a batch is: done, running, failed and queued jobs, and its ETA."""
    try:
        out = obj.client().batch_status(batch_id)
    except ApiError as exc:
        fail(exc.message)
    show(out, as_json, _progress_line(out))


@batch.command("list")
@json_option
@click.pass_obj
def list_(obj: Ctx, as_json: bool) -> None:
    """Your batches, newest first."""
    try:
        out = obj.client().list_batches()
    except ApiError as exc:
        fail(exc.message)
    lines = [f"{_progress_line(b)}  {b['name']}" for b in out["batches"]] or ["no batches"]
    show(out, as_json, "\n".join(lines))


@batch.command("wait")
@click.argument("batch_id")
@click.option("--timeout", type=float, default=86_400.0, show_default=True, help="Seconds.")
@click.pass_obj
def wait(obj: Ctx, batch_id: str, timeout: float) -> None:
    """Follow a batch with a progress bar until every job has ended; exit 1 if any failed."""
    client = obj.client()
    deadline, last = time.monotonic() + timeout, ""
    try:
        while True:
            out = client.batch_status(batch_id)
            line = _progress_line(out)
            if line != last:
                click.echo(line)
                last = line
            if out["done"]:
                break
            if time.monotonic() > deadline:
                fail(f"batch {batch_id} is not done after {timeout:g} s")
            time.sleep(2.0)
    except ApiError as exc:
        fail(exc.message)
    failed = out["counts"]["FAILED"]
    if failed:
        fail(f"{failed} jobs failed: `cameofarm batch results {batch_id}` says why")


@batch.command("cancel")
@click.argument("batch_id")
@click.pass_obj
def cancel(obj: Ctx, batch_id: str) -> None:
    """Cancel the batch's jobs that have not ended (published videos stay)."""
    try:
        click.echo(_progress_line(obj.client().cancel_batch(batch_id)))
    except ApiError as exc:
        fail(exc.message)


@batch.command("retry-failed")
@click.argument("batch_id")
@click.pass_obj
def retry_failed(obj: Ctx, batch_id: str) -> None:
    """Queue a new job for every failed row (consent and content are checked again)."""
    try:
        out = obj.client().retry_failed(batch_id)
    except ApiError as exc:
        fail(exc.message)
    click.echo(f"{len(out['retried'])} rows queued again")
    for r in out["refused"]:
        click.echo(f"  row {r['row']} refused: {r['reason']}")


@batch.command("results")
@click.argument("batch_id")
@click.option("--csv", "as_csv", is_flag=True, help="Print the sheet as CSV.")
@json_option
@click.pass_obj
def results(obj: Ctx, batch_id: str, as_csv: bool, as_json: bool) -> None:
    """The results sheet: per row its job, status, error, time and quality figures."""
    from cameofarm.service.areas.batches import results_csv

    try:
        out = obj.client().batch_results(batch_id)
    except ApiError as exc:
        fail(exc.message)
    if as_csv:
        click.echo(results_csv(out), nl=False)
        return
    lines = [
        f"row {r['row']:>4} {r['output']:<24} {r['status']:<9} {r['job_id']} {r['error'][:60]}"
        for r in out["rows"]
    ]
    show(out, as_json, "\n".join(lines))


@batch.command("download")
@click.argument("batch_id")
@click.argument("folder", type=click.Path(file_okay=False))
@click.pass_obj
def download(obj: Ctx, batch_id: str, folder: str) -> None:
    """Fetch every published video of the batch as FOLDER/<output>.mp4 with its captions
    (.vtt, .srt), and the results sheet (results.csv, results.json). Files already there are
    kept, so an interrupted download is finished by running it again."""
    import httpx
    from cameofarm.service.areas.batches import results_csv

    client = obj.client()
    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        sheet = client.batch_results(batch_id)
        fetched = 0
        published = [r for r in sheet["rows"] if r["status"] == "SUCCEEDED"]
        for n, row in enumerate(published, start=1):
            target = out_dir / f"{row['output']}.mp4"
            if not target.exists():
                url = client.download(row["job_id"])["url"]
                part = target.with_suffix(".part")
                if url.startswith(("http://", "https://")):
                    with httpx.stream("GET", url, timeout=600) as answer, part.open("wb") as fh:
                        answer.raise_for_status()
                        for chunk in answer.iter_bytes():
                            fh.write(chunk)
                else:  # in-process on a local store: the file itself
                    shutil.copyfile(url, part)
                part.replace(target)
                fetched += 1
            for fmt in ("vtt", "srt"):  # the captions beside it
                sidecar = target.with_suffix(f".{fmt}")
                if not sidecar.exists():
                    sidecar.write_text(client.captions(row["job_id"], fmt), encoding="utf-8")
            click.echo(f"  [{n}/{len(published)}] {target}")
    except (ApiError, httpx.HTTPError, OSError) as exc:
        fail(f"download stopped: {exc} (run it again: videos already fetched are kept)")
    (out_dir / "results.csv").write_text(results_csv(sheet))
    (out_dir / "results.json").write_text(json.dumps(sheet, indent=2))
    click.echo(
        f"{fetched} videos fetched, {len(published) - fetched} already there; "
        f"{len(sheet['rows']) - len(published)} rows not published; sheet in {out_dir}"
    )
