"""One ledger writer: only dispatcher/domain/ledger_sql.py writes deliveries, attempts, delivery_events and
gateway_states.

Checked on the syntax trees of dispatcher/ and workers/, and shown to catch each kind of write when
it is injected into a copy of the tree, the way tests/test_layers.py breaks the import rules.
"""

from __future__ import annotations

import ast
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WRITER = "dispatcher/domain/ledger_sql.py"
MODELS = frozenset({"Delivery", "DeliveryEvent", "Attempt", "GatewayState"})
# columns of deliveries and attempts that only the ledger sets (the ORM writes them on flush)
OWNED = frozenset(
    {
        "state",
        "last_error",
        "not_before",
        "queued_at",
        "lease_expires_at",
        "attempt_count",
        "provider_id",
        "expects_report",
        "document_sha256",
        "page_count",
        "outcome",
        "finished_at",
        "error_code",
        "detail",
        "evidence",
        # gateway_states
        "paused_at",
        "trial_after",
        "trial_at",
        "failing_since",
    }
)
WRITE_HELPER = re.compile(r"insert|update|delete|upsert|merge", re.I)
SQL_WRITE = re.compile(
    r"\b(insert\s+into|update|delete\s+from)\s+[\"`]?(deliveries|delivery_events|attempts|gateway_states)\b", re.I
)


def _name(node: ast.expr) -> str | None:
    """``Delivery`` for ``Delivery`` or ``models.Delivery``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _targets(node: ast.expr) -> Iterator[ast.expr]:
    if isinstance(node, ast.Tuple | ast.List):
        for element in node.elts:
            yield from _targets(element)
    else:
        yield node


def _is_ledger_table(node: ast.expr) -> bool:
    """``Delivery`` or ``Delivery.__table__``."""
    if isinstance(node, ast.Attribute) and node.attr == "__table__":
        node = node.value
    return _name(node) in MODELS


def _call_writes(node: ast.Call) -> str | None:
    called = _name(node.func)
    if called in MODELS:
        return f"constructs {called}"
    if called in ("insert", "update", "delete") and node.args and _is_ledger_table(node.args[0]):
        return f"{called}({ast.unparse(node.args[0])})"
    if called and WRITE_HELPER.search(called):  # a helper handed the model: _insert(session, Delivery, rows)
        for arg in node.args:
            if _is_ledger_table(arg):
                return f"{called}(..., {ast.unparse(arg)}, ...)"
    table_method = isinstance(node.func, ast.Attribute) and called in ("insert", "update", "delete")
    if table_method and _is_ledger_table(node.func.value):  # type: ignore[attr-defined]  # Delivery.__table__.update()
        return f"{ast.unparse(node.func)}()"
    if called == "setattr" and len(node.args) >= 2:
        key = node.args[1]
        if isinstance(key, ast.Constant) and key.value in OWNED:
            return f"sets .{key.value}"
    return None


def _assigns_owned(node: ast.AST) -> Iterator[str]:
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AugAssign | ast.AnnAssign):
        targets = [node.target]
    for target in (t for group in targets for t in _targets(group)):
        on_self = isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"
        if isinstance(target, ast.Attribute) and target.attr in OWNED and not on_self:
            yield f"assigns {ast.unparse(target)}"


def ledger_writes(source: str) -> list[tuple[int, str]]:
    """Every write to the ledger's tables in ``source``: (line, what)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and (what := _call_writes(node)):
            found.append((node.lineno, what))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_WRITE.search(node.value):
            found.append((node.lineno, f"SQL {SQL_WRITE.search(node.value).group(0)!r}"))  # type: ignore[union-attr]
        if isinstance(node, ast.stmt):
            found.extend((node.lineno, what) for what in _assigns_owned(node))
    return sorted(found)


def writers_outside_the_ledger(tree: Path) -> dict[str, list[tuple[int, str]]]:
    """Modules of dispatcher/ and workers/ other than the ledger's implementation that write its tables."""
    found = {}
    for path in sorted([*tree.glob("dispatcher/**/*.py"), *tree.glob("workers/**/*.py")]):
        module = path.relative_to(tree).as_posix()
        if module == WRITER:
            continue
        writes = ledger_writes(path.read_text(encoding="utf-8"))
        if writes:
            found[module] = writes
    return found


def test_only_the_ledger_writes_deliveries_attempts_events_and_gateway_states() -> None:
    assert writers_outside_the_ledger(ROOT) == {}


def test_the_ledger_itself_is_seen_writing() -> None:
    """The check recognises the real writer's own writes (it is not blind to this code base's style)."""
    kinds = {what.split("(")[0].split(" ")[0] for _, what in ledger_writes((ROOT / WRITER).read_text())}
    assert {"constructs", "insert", "update", "delete", "assigns"} <= kinds


@pytest.mark.parametrize(
    ("module", "snippet", "what"),
    [
        (
            "dispatcher/domain/outcomes.py",
            "session.add(DeliveryEvent(delivery_id=d.id, campaign_id=1, actor='x', to_state=d.state))",
            "constructs DeliveryEvent",
        ),
        ("dispatcher/domain/scheduling.py", "session.execute(insert(DeliveryEvent), rows)", "insert(DeliveryEvent)"),
        (
            "workers/delivery.py",
            "session.execute(update(Delivery).where(Delivery.id == 1).values(state='sending'))",
            "update(Delivery)",
        ),
        ("dispatcher/domain/planning.py", "session.execute(delete(Delivery))", "delete(Delivery)"),
        ("dispatcher/domain/planning.py", "_insert(session, DeliveryEvent, rows)", "_insert(..., DeliveryEvent, ...)"),
        ("workers/reconcile.py", "session.add(Attempt(delivery_id=1, number=2, gateway='g'))", "constructs Attempt"),
        ("workers/reconcile.py", "d.state = 'retry_wait'", "assigns d.state"),
        ("dispatcher/domain/control.py", "delivery.last_error = reason", "assigns delivery.last_error"),
        ("dispatcher/domain/scheduling.py", "d.not_before, d.queued_at = now, now", "assigns d.not_before"),
        ("dispatcher/domain/scheduling.py", "d.not_before, d.queued_at = now, now", "assigns d.queued_at"),
        ("dispatcher/domain/outcomes.py", "delivery.attempt_count += 1", "assigns delivery.attempt_count"),
        ("workers/delivery.py", "attempt.outcome = 'submitted'", "assigns attempt.outcome"),
        ("dispatcher/processes/api.py", "setattr(delivery, 'last_error', text)", "sets .last_error"),
        (
            "dispatcher/processes/cli.py",
            "session.execute(text(\"UPDATE deliveries SET state = 'planned'\"))",
            "SQL 'UPDATE deliveries'",
        ),
        (
            "workers/tasks.py",
            'conn.exec_driver_sql("insert into delivery_events (delivery_id) values (1)")',
            "SQL 'insert into delivery_events'",
        ),
        ("dispatcher/domain/queries.py", "conn.execute(Delivery.__table__.update())", "Delivery.__table__.update()"),
        (
            "dispatcher/domain/gateway_pauses.py",
            "session.execute(update(GatewayState).values(paused_at=None))",
            "update(GatewayState)",
        ),
        ("workers/delivery.py", "session.add(GatewayState(name='telnyx'))", "constructs GatewayState"),
        ("dispatcher/processes/cli.py", "row.paused_at = None", "assigns row.paused_at"),
        (
            "dispatcher/processes/cli.py",
            'conn.exec_driver_sql("DELETE FROM gateway_states")',
            "SQL 'DELETE FROM gateway_states'",
        ),
    ],
)
def test_a_write_outside_the_ledger_is_caught(tmp_path: Path, module: str, snippet: str, what: str) -> None:
    tree = tmp_path / "tree"
    for name in ("dispatcher", "workers"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    path = tree / module
    source = path.read_text(encoding="utf-8")
    parameters = "session, conn, d, delivery, attempt, rows, now, reason, text, row"
    path.write_text(f"{source}\n\ndef _injected({parameters}):\n    {snippet}\n")
    line = len(source.splitlines()) + 4
    found = writers_outside_the_ledger(tree)
    assert list(found) == [module]
    assert (line, what) in found[module]
    assert {at for at, _ in found[module]} == {line}  # the injected line, and nothing else
