"""Commands for people and CI: ``flask --app app check-model PATH`` and ``swap-model PATH``."""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from classifier.errors import ModelContractError
from classifier.model_update import (
    check_model_file,
    gunicorn_master_pid,
    install_model,
    reload_workers,
)


def register_commands(app: Flask) -> None:
    app.cli.add_command(check_model_command)
    app.cli.add_command(swap_model_command)


@click.command("check-model")
@click.argument("path", type=click.Path(dir_okay=False))
@with_appcontext
def check_model_command(path: str) -> None:
    """Check that PATH can be served: it loads, meets the contract, classifies an image.

    Exits 1 with the reason when it cannot. Nothing is served or replaced.
    """
    try:
        classifier = check_model_file(path, max_pixels=current_app.config["MAX_IMAGE_PIXELS"])
    except ModelContractError as error:
        raise click.ClickException(f"refused: {error}") from error
    model, smoke = classifier.model, classifier.smoke_test()
    click.echo(
        f"ok: {path} is {model.name} {model.version}, {len(model.labels)} classes; "
        f"smoke image -> {smoke.top[0][0]} ({smoke.top[0][1]:.3f})"
    )


@click.command("swap-model")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--pid", type=int, help="The gunicorn master's process id.")
@click.option(
    "--pidfile",
    type=click.Path(dir_okay=False),
    help="gunicorn's pid file (start gunicorn with --pid FILE, or GUNICORN_CMD_ARGS='--pid FILE').",
)
@with_appcontext
def swap_model_command(path: str, pid: int | None, pidfile: str | None) -> None:
    """Serve PATH without downtime: check it, replace MODEL_PATH atomically, reload gunicorn.

    A file that fails the check is refused (exit 1) and MODEL_PATH is left untouched.
    gunicorn then starts new workers on the new file and stops the old ones gracefully.
    """
    served = current_app.config["MODEL_PATH"]
    try:
        # Find gunicorn first, so that a wrong pid leaves the served file alone.
        master = gunicorn_master_pid(pid=pid, pidfile=pidfile)
    except (ValueError, LookupError) as error:
        raise click.ClickException(str(error)) from error
    try:
        model = install_model(path, served, max_pixels=current_app.config["MAX_IMAGE_PIXELS"])
    except ModelContractError as error:
        raise click.ClickException(f"refused, {served} unchanged: {error}") from error
    reload_workers(master)
    click.echo(
        f"swapped: {served} is now {model.name} {model.version}; gunicorn (pid {master}) is "
        "replacing its workers. GET /health reports the version each worker serves."
    )
