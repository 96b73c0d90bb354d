"""The documents a customer or supplier receives for a month: its own invoice (or payout statement) as CSV
and as a readable HTML page, built from the settled statement (tasks/billing/invoices.py), so what is sent is
what is billed, to the cent. Only the owner's own lines are ever read: nobody sees another's numbers."""

from __future__ import annotations

from html import escape
from pathlib import Path

from tasks.billing.deliveries import Outgoing
from tasks.billing.invoices import Statement
from tasks.billing.statements import safe_name, write_statement_of

STYLE = (
    "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
    "th,td{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}td.n{text-align:right}"
    "tfoot td{font-weight:bold;border-top:2px solid #222}"
)


def month_documents(statement: Statement, owner: str, out_dir: Path) -> Outgoing:
    """The owner's CSV and HTML for the statement's month, written under out_dir, as the email to send."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = write_statement_of(statement, owner, out_dir)
    html_path = out_dir / csv_path.name.replace(".csv", ".html")
    html_path.write_text(statement_html(statement, owner), encoding="utf-8")
    invoice = statement.kind == "invoice"
    name = "Invoice" if invoice else "Payout statement"
    period = f"{statement.first_day:%Y-%m}"
    total = f"{statement.total_of(owner):.2f} {statement.currency}"
    title = f"{name} {period}: {owner}"
    summary = (
        f"<p>{escape(name)} for <b>{escape(owner)}</b>, {statement.first_day} to {statement.last_day}: "
        f"<b>{escape(total)}</b> ({'due' if invoice else 'payable to you'}). The lines are attached as CSV "
        "and HTML.</p>"
    )
    return Outgoing(
        "customer" if invoice else "supplier",
        owner,
        statement.kind,
        period,
        title,
        summary,
        (csv_path, html_path),
    )


def statement_html(statement: Statement, owner: str) -> str:
    """A readable page of the owner's lines: one row per invoice line (adjustments name the day they
    correct), amounts rounded once per line, and the total they add up to."""
    invoice = statement.kind == "invoice"
    heading = "Invoice" if invoice else "Payout statement"
    head = ["Month", *(["Project"] if invoice else []), "GPU type", "Line", "GPU-hours", "Amount"]
    rows = []
    for line in statement.lines_of(owner):
        cells = [
            f"{line.month:%Y-%m}",
            *([line.project] if invoice else []),
            line.gpu_type,
            line.description,
        ]
        rows.append(
            "<tr>"
            + "".join(f"<td>{escape(c)}</td>" for c in cells)
            + f'<td class="n">{line.gpu_hours}</td><td class="n">{line.amount:.2f}</td></tr>'
        )
    total = f"{statement.total_of(owner):.2f} {statement.currency}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(heading)} {escape(owner)}</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>{escape(heading)}</h1><p>{'Customer' if invoice else 'Supplier'}: <b>{escape(owner)}</b><br>"
        f"Period: {statement.first_day} to {statement.last_day}<br>Currency: {escape(statement.currency)}</p>"
        "<table><thead><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + f'</tbody><tfoot><tr><td colspan="{len(head) - 1}">Total</td><td class="n">{escape(total)}</td>'
        "</tr></tfoot></table>"
        "<p>GPU-hours are exact to the microsecond; each line's amount is rounded to the cent once, and the "
        "lines add up to the total.</p></body></html>"
    )


def document_dir(root: Path, kind: str, owner: str) -> Path:
    """Each owner's documents in a folder of its own: a later attachment can never pick up another's."""
    return root / f"{kind}s" / safe_name(owner)
