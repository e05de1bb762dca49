"""Commands for people and CI: ``flask --app app check-model PATH``, ``swap-model PATH``,
``promote``, ``rollback`` and ``predict PATH...``."""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from classifier.batch import WRITERS, classify_files, find_images
from classifier.errors import InvalidParameter, ModelContractError
from classifier.model_update import (
    check_model_file,
    gunicorn_master_pid,
    install_files,
    model_files,
    previous_files,
    reload_workers,
)

from .served_model import candidate_onnx_path, classifier_for_command, setup_options


def register_commands(app: Flask) -> None:
    app.cli.add_command(check_model_command)
    app.cli.add_command(swap_model_command)
    app.cli.add_command(promote_command)
    app.cli.add_command(rollback_command)
    app.cli.add_command(predict_command)


@click.command("check-model")
@click.argument("path", type=click.Path(dir_okay=False))
@with_appcontext
def check_model_command(path: str) -> None:
    """Check that PATH can be served: it loads, meets the contract, classifies an image.

    The check is the one a worker runs, with the server's settings (INFERENCE_ENGINE,
    ONNX_MODEL_PATH, ...). Exits 1 with the reason when it cannot. Nothing is served or
    replaced.
    """
    try:
        classifier = check_model_file(path, **setup_options(current_app.config))
    except ModelContractError as error:
        raise click.ClickException(f"refused: {error}") from error
    model, smoke = classifier.model, classifier.smoke_test()
    click.echo(
        f"ok: {path} is {model.name} {model.version}, {len(model.labels)} classes; "
        f"smoke image -> {smoke.top[0][0]} ({smoke.top[0][1]:.3f}); "
        f"workers would serve it with {classifier.engine.name} ({classifier.engine_reason})"
    )


def gunicorn_options(command):
    """The options that name the gunicorn master to reload."""
    command = click.option("--pidfile", type=click.Path(dir_okay=False), help=(
        "gunicorn's pid file (start gunicorn with --pid FILE, or GUNICORN_CMD_ARGS='--pid FILE')."))(command)
    return click.option("--pid", type=int, help="The gunicorn master's process id.")(command)


@click.command("swap-model")
@click.argument("path", type=click.Path(dir_okay=False))
@gunicorn_options
@with_appcontext
def swap_model_command(path: str, pid: int | None, pidfile: str | None) -> None:
    """Serve PATH without downtime: check it, replace MODEL_PATH atomically, reload gunicorn.

    The check is the one a worker runs, with the server's settings (see check-model). A
    file that fails it is refused (exit 1) and MODEL_PATH is left untouched.
    gunicorn then starts new workers on the new file and stops the old ones gracefully.
    """
    serve_files([path], [current_app.config["MODEL_PATH"]], pid, pidfile, "swapped")


@click.command("promote")
@gunicorn_options
@with_appcontext
def promote_command(pid: int | None, pidfile: str | None) -> None:
    """Serve the candidate (CANDIDATE_MODEL_PATH, with its ONNX copy) in place of the served model.

    Checked and installed as swap-model does; the served model's files are kept as
    NAME.previous for rollback, and the candidate's are moved, so the reloaded workers have none.
    """
    config = current_app.config
    if not config["CANDIDATE_MODEL_PATH"]:
        raise click.ClickException("CANDIDATE_MODEL_PATH is not set: there is no candidate to promote.")
    served = model_files(config["MODEL_PATH"], config["ONNX_MODEL_PATH"])
    candidate = model_files(config["CANDIDATE_MODEL_PATH"], candidate_onnx_path(config))
    serve_files(candidate, served, pid, pidfile, "promoted", displaced=previous_files(served), move=True)


@click.command("rollback")
@gunicorn_options
@with_appcontext
def rollback_command(pid: int | None, pidfile: str | None) -> None:
    """Undo promote: serve the model it replaced again, and make the promoted one the candidate again."""
    config = current_app.config
    served = model_files(config["MODEL_PATH"], config["ONNX_MODEL_PATH"])
    previous = previous_files(served)
    if not previous[0].is_file():
        raise click.ClickException(f"Nothing to roll back: {previous[0]} does not exist (promote keeps it).")
    candidate = model_files(config["CANDIDATE_MODEL_PATH"], candidate_onnx_path(config)) \
        if config["CANDIDATE_MODEL_PATH"] else []
    serve_files(previous, served, pid, pidfile, "rolled back", displaced=candidate, move=True)


def serve_files(sources, served, pid, pidfile, done: str, displaced=(), move: bool = False) -> None:
    """Check ``sources``, install them as ``served`` (``install_files``) and reload gunicorn."""
    try:
        # Find gunicorn first, so that a wrong pid leaves the served file alone.
        master = gunicorn_master_pid(pid=pid, pidfile=pidfile)
    except (ValueError, LookupError) as error:
        raise click.ClickException(str(error)) from error
    try:
        classifier = install_files(sources, served, displaced, move=move, **setup_options(current_app.config))
    except ModelContractError as error:
        raise click.ClickException(f"refused, {served[0]} unchanged: {error}") from error
    reload_workers(master)
    model = classifier.model
    click.echo(
        f"{done}: {served[0]} is now {model.name} {model.version}, served with {classifier.engine.name}; "
        f"gunicorn (pid {master}) is replacing its workers. GET /health reports the version each worker serves."
    )


# Threads of one process; a Ray cluster may have many more actors.
MAX_LOCAL_LANES = 64
# --ray without an address: a Ray of the command's own on this machine (ray.init's "local").
LOCAL_RAY = "local"

# Measured on the 1280 UC Merced images (bench/batch-results.md): on a CPU, this model's
# time per image grows with the batch (its activations outgrow the caches), so the command
# gets its throughput from running batches side by side, one per core, while threads decode.
DEFAULT_BATCH_SIZE = 1


@click.command("predict")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "output_format", type=click.Choice(sorted(WRITERS)), default="csv", show_default=True,
              help="CSV (a header, one row per file) or JSON lines (the API's answer plus \"path\").")
@click.option("--output", "-o", type=click.File("w", encoding="utf-8"), default="-", show_default=True,
              help="Where to write the predictions; - is standard output.")
@click.option("--top", "top", default=None, help="How many classes per image, best first.  [default: the API's, 5]")
@click.option("--batch-size", type=click.IntRange(1, 512), default=DEFAULT_BATCH_SIZE, show_default=True,
              help="Images per forward pass of the model.")
@click.option("--workers", type=click.IntRange(1, 64), default=min(4, os.cpu_count() or 1), show_default=True,
              help="Threads that read and decode images while the model runs.")
@click.option("--lanes", type=click.IntRange(1, 4096), default=None,
              help="Batches the model runs at once, one core each; with --ray, the model actors.  "
                   "[default: TORCH_THREADS, all cores; with --ray, the cluster's CPUs]")
@click.option("--ray", "ray_address", is_flag=False, flag_value=LOCAL_RAY, default=None, metavar="[ADDRESS]",
              help="Run on Ray (docs/scaling.md): join the cluster at ADDRESS, or start a local Ray "
                   "without one (put --ray last, or write --ray=ADDRESS).")
@click.option("--ray-decode", "decode_in", type=click.Choice(["actors", "tasks"]), default="actors", show_default=True,
              help="With --ray: decode in the model actors, or in CPU tasks of their own ahead of them.")
@with_appcontext
def predict_command(paths, output_format, output, top, batch_size, workers, lanes, ray_address, decode_in) -> None:
    """Classify image files and folders (recursively) with the served model.

    Writes one line per file to --output. A file that cannot be read is reported on
    standard error, with its reason in the output, and the others go on; the exit status is
    1 only if no file could be classified. With --ray the same answers come from a Ray
    cluster, whose every node must read the files at the same paths.
    """
    classifier = classifier_for_command()
    try:
        top_k = classifier.parse_top_k(top)
    except InvalidParameter as error:
        raise click.BadParameter(error.message, param_hint="--top") from error
    files = find_images(paths)
    if not files:
        raise click.ClickException("No image files found in " + ", ".join(map(str, paths)) + ".")

    if ray_address is None:
        if lanes and lanes > MAX_LOCAL_LANES:
            raise click.BadParameter(f"at most {MAX_LOCAL_LANES} on one machine (more with --ray).", param_hint="--lanes")
        lanes = lanes or current_app.config["TORCH_THREADS"]
        results = classify_files(classifier, files, batch_size=batch_size, top_k=top_k, workers=workers, lanes=lanes)
        _write_results(results, files, WRITERS[output_format](output, top_k), output)
        return
    from classifier.ray_batch import ModelFiles, classify_files_on_ray, ray_cluster

    options = setup_options(current_app.config, threads=1)
    model = ModelFiles.read(current_app.config["MODEL_PATH"], options["onnx_path"])
    with ExitStack() as stack:
        try:
            stack.enter_context(ray_cluster(ray_address))
        except ConnectionError as error:
            raise click.ClickException(f"cannot reach the Ray cluster at {ray_address}: {error}") from error
        try:
            results = classify_files_on_ray(model, options, files, batch_size=batch_size, top_k=top_k,
                                            actors=lanes, decode_in=decode_in)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--lanes") from error
        _write_results(results, files, WRITERS[output_format](output, top_k), output)


def _write_results(results, files, writer, output) -> None:
    """Write each result as it comes, report the unreadable ones; exit 1 if none was classified."""
    stderr = sys.stderr
    started, classified = time.perf_counter(), 0
    # A progress bar only for a person at a terminal; a log or a pipe gets the summary alone.
    progress = click.progressbar(length=len(files), label="Classifying", file=stderr) if stderr.isatty() else None
    for result in results:
        writer.write(result)
        if result.ok:
            classified += 1
        else:
            message = f"skipped {result.path}: {result.error_message}"
            click.echo(("\n" if progress else "") + message, err=True)
        if progress:
            progress.update(1)
    if progress:
        progress.render_finish()
    output.flush()
    seconds = time.perf_counter() - started
    skipped = len(files) - classified
    click.echo(
        f"classified {classified} of {len(files)} files in {seconds:.1f}s "
        f"({classified / seconds:.1f} images/s){f'; {skipped} could not be read' if skipped else ''}",
        err=True,
    )
    if classified == 0:
        sys.exit(1)
