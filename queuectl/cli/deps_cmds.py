"""Dependencies, visible: ``queuectl tree ID`` draws the chain around a job (Rich's Tree)."""

from typing import Any

import typer

from queuectl.cli.context import store_of
from queuectl.cli.output import json_option, print_json
from queuectl.service import deps


def tree(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., metavar="ID"),
    per_job: int = typer.Option(
        deps.DEPENDANTS_SHOWN, "--limit", "-n", min=1, max=1000, help="Dependants drawn under each job at most."
    ),
    as_json: bool = json_option(),
) -> None:
    """Draw the chain around a job: the jobs it waits for (above) and the jobs that wait for it
    (below, via --after or --on-failure-of), states coloured. At most 200 jobs are drawn; past
    --limit under one job, a line says how many more there are.

    Example: queuectl tree build1
    """
    chain = deps.tree(store_of(ctx), job_id, per_node=per_job)
    if as_json:
        print_json(chain.to_dict())
        return
    from queuectl.cli.render import console

    out = console()
    from queuectl.cli.render import safe

    for row in reversed(chain.ancestors):
        out.print(f"{_label(row.id, row.state, row.command)} [dim]({_why(row.kind)} of {safe(row.of)})[/]")
    out.print(_tree(chain.root))
    if chain.truncated:
        out.print(f"[dim]… the tree stops at {deps.TREE_NODES} jobs: queuectl tree ID of a job above shows its part[/]")


def _why(kind: str | None) -> str:
    return "parent (--on-failure-of)" if kind == "on_failure_of" else "parent"


def _label(job_id: str, state: str | None, command: str | None) -> str:
    from queuectl.cli.render import safe, styled_state

    shown = styled_state(state) if state else "[dim]purged[/]"
    text = (command or "").strip().splitlines()[0] if (command or "").strip() else ""
    if len(text) > 60:
        text = text[:59] + "…"
    return f"[bold]{safe(job_id)}[/] {shown} [dim]{safe(text)}[/]"


def _tree(node: deps.Node) -> Any:
    from rich.tree import Tree

    drawn = Tree(_label(node.id, node.state, node.command))
    _grow(drawn, node)
    return drawn


def _grow(branch: Any, node: deps.Node) -> None:
    for child in node.children:
        label = _label(child.id, child.state, child.command)
        if child.kind == "on_failure_of":
            label += " [dim](on failure)[/]"
        if child.seen:
            label += " [dim](also under another job here)[/]"
        _grow(branch.add(label), child)
    if node.more:
        count = f"{node.more:,}+" if node.more_is_floor else f"{node.more:,}"
        from queuectl.cli.render import safe

        branch.add(f"[dim]… and {count} more (queuectl tree {safe(node.id)} --limit N)[/]")


def register(app: typer.Typer) -> None:
    app.command()(tree)
