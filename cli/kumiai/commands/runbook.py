"""`kumiai runbook list|show|render`: the DR procedures of dr-runbooks/, and the Markdown a person reads."""

from __future__ import annotations

from typing import Annotated

import typer

from kumiai.commands.common import JsonOpt
from kumiai.console import emit_json, out
from kumiai.dr.runbook import load_all, render_markdown, runbooks_dir
from kumiai.errors import InputError, KumiaiError, Problem

runbook_app = typer.Typer(
    help="DR runbooks (dr-runbooks/*.yaml): list, show, render to Markdown.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(runbook_app, name="runbook")


def rendered() -> dict[str, str]:
    """Every runbook's Markdown, by the name of the file it belongs in (next to its YAML)."""
    return {
        f"{book_id}.md": render_markdown(book, f"dr-runbooks/{book_id}.yaml") for book_id, book in load_all().items()
    }


@runbook_app.command("list")
def runbook_list(json_: JsonOpt = False) -> None:
    """Every runbook: id, title and number of steps."""
    books = load_all()
    if json_:
        emit_json(
            [{"id": b.id, "title": b.title, "title_ja": b.title_ja, "steps": len(b.steps)} for b in books.values()]
        )
        return
    for book in books.values():
        out.print(
            f"{book.id:22} {len(book.steps):2} steps  {book.title}" + (f"（{book.title_ja}）" if book.title_ja else "")
        )


@runbook_app.command("show")
def runbook_show(
    runbook_id: Annotated[str, typer.Argument(metavar="ID", help="Runbook id (the YAML's file name).")],
    json_: JsonOpt = False,
) -> None:
    """One runbook's steps: action, check, timeout, whether it is safe to retry."""
    books = load_all()
    if runbook_id not in books:
        raise InputError(Problem(str(runbooks_dir()), "ID", f"no runbook {runbook_id!r}; runbooks: {', '.join(books)}"))
    book = books[runbook_id]
    if json_:
        emit_json(book.model_dump())
        return
    out.print(render_markdown(book, f"dr-runbooks/{book.id}.yaml"), markup=False)


@runbook_app.command("render")
def runbook_render(
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 when a Markdown file is stale.")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Write each runbook's Markdown next to its YAML (dr-runbooks/<id>.md)."""
    stale = []
    for name, text in rendered().items():
        path = runbooks_dir() / name
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not check:
            path.write_text(text, encoding="utf-8")
    if json_:
        emit_json({"stale" if check else "written": stale})
    if check and stale:
        raise KumiaiError(f"stale runbook pages: {', '.join(stale)} (kumiai runbook render)")
    if not json_:
        out.print(f"{'stale' if check else 'written'}: {', '.join(stale) or 'none'}")
