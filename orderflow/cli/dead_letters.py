"""Commands on dead letters: dlq list, show, replay, edit, purge."""

from __future__ import annotations

import typer
from rich.table import Table

from orderflow.cli.base import _settings, app, console, err, run

dlq_app = typer.Typer(no_args_is_help=True, help="Dead letters of the queues and of the relays.")
app.add_typer(dlq_app, name="dlq")


@dlq_app.command("list")
def dlq_list(
    queue: str | None = typer.Option(None, "--queue", help="e.g. order_svc.commands"),
) -> None:
    """List dead letters with why they died."""
    from orderflow.dlq import list_letters

    letters = run(list_letters(_settings(), queue=queue))
    table = Table("id", "where", "type", "error", "attempts")
    for letter in letters:
        table.add_row(
            letter.id,
            letter.where,
            letter.type,
            f"{letter.error_class}: {letter.error}"[:120],
            str(letter.attempts),
        )
    console.print(table)
    console.print(f"{len(letters)} dead letter(s)")


@dlq_app.command("show")
def dlq_show(letter_id: str) -> None:
    """Show one dead letter: headers and body."""
    from orderflow.dlq import list_letters

    letters = [x for x in run(list_letters(_settings())) if x.id == letter_id]
    if not letters:
        err.print(f"[bold red]error:[/] no dead letter {letter_id}; see `orderflow dlq list`")
        raise typer.Exit(1)
    letter = letters[0]
    console.print(f"[bold]{letter.id}[/] in {letter.where}: {letter.type}")
    console.print(f"error: {letter.error_class}: {letter.error}  (attempts {letter.attempts})")
    for key, value in sorted(letter.headers.items()):
        console.print(f"  {key}: {value}", markup=False)
    console.print(letter.body.decode(errors="replace"), markup=False, highlight=False)


@dlq_app.command("replay")
def dlq_replay(
    letter_id: str | None = typer.Argument(None),
    all_: bool = typer.Option(False, "--all"),
    queue: str | None = typer.Option(None, "--queue"),
    group: str | None = typer.Option(
        None, "--group", help="every letter of one group, 'ERROR_CLASS|TYPE' as `dlq list` shows"
    ),
) -> None:
    """Send dead letters back where they came from (processed once, thanks to the inbox)."""
    from orderflow.dlq import Selection, replay

    if sum((letter_id is not None, all_, group is not None)) != 1:
        raise typer.BadParameter("give one dead letter id, --group CLASS|TYPE, or --all")
    chosen = None
    if group is not None:
        error_class, sep, type_name = group.partition("|")
        if not sep:
            raise typer.BadParameter("--group is ERROR_CLASS|TYPE")
        chosen = Selection(group=(error_class, type_name), queue=queue)
    done = run(replay(_settings(), letter_id=letter_id, queue=queue, selection=chosen))
    for refused_id, why in done.refused:
        err.print(f"[bold red]not replayed[/] {refused_id}: {why}", highlight=False)
    if letter_id is not None and done.count == 0:
        if not done.refused:
            err.print(f"[bold red]error:[/] no dead letter {letter_id} (already replayed?)")
        raise typer.Exit(1)
    console.print(f"replayed {done.count} dead letter(s)")
    if done.refused:
        raise typer.Exit(1)


@dlq_app.command("edit")
def dlq_edit(
    letter_id: str,
    body_file: typer.FileText = typer.Option(
        ..., "--body-file", help="the corrected CloudEvent (JSON); '-' reads standard input"
    ),
) -> None:
    """Send a corrected body in place of a dead letter: a new message whose causation is the
    letter (sent twice, applied once); the letter is then removed."""
    from orderflow.dlq import edit_and_replay

    new_id = run(edit_and_replay(_settings(), letter_id, body_file.read().encode()))
    console.print(f"sent the corrected letter as message {new_id} (caused by {letter_id})")


@dlq_app.command("purge")
def dlq_purge(
    queue: str | None = typer.Option(None, "--queue"),
    yes: bool = typer.Option(False, "--yes", help="do not ask"),
) -> None:
    """Delete dead letters for good."""
    from orderflow.dlq import purge

    if not yes and not typer.confirm("Delete the dead letters for good?"):
        raise typer.Exit(1)
    console.print(f"purged {run(purge(_settings(), queue=queue))} dead letter(s)")
