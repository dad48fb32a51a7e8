"""MkDocs hook: the parts of the documentation that are generated from the code at build time,
never copied by hand. A page asks for one with a marker on a line of its own:

    <!-- fsbridge:configuration -->     every configuration key: type, default, description
    <!-- fsbridge:environment -->       every FSBRIDGE_* variable
    <!-- fsbridge:cli -->               every command and option of `fsbridge`
    <!-- fsbridge:http -->              every endpoint of the OpenAPI document
    <!-- fsbridge:metrics -->           every Prometheus metric `/metrics` exports
    <!-- fsbridge:flow NAME -->         a built-in flow's keys and a golden input with its output
    <!-- fsbridge:job NAME -->          a job's keys
    <!-- fsbridge:benchmarks -->        the latest `make bench` table (docs/performance-table.md)

Descriptions come from the models' docstrings and the comment on each field's line."""

from __future__ import annotations

import ast
import inspect
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, get_args, get_origin

import orjson
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

MARKER = re.compile(r"^<!-- fsbridge:(\w+)(?: (\S+))? -->$", re.M)
GOLDEN = ROOT / "config" / "examples" / "golden"
GOLDEN_AGGREGATIONS = ROOT / "config" / "examples" / "golden_aggregations"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return MARKER.sub(lambda m: RENDERERS[m.group(1)](m.group(2)), markdown)


# -- descriptions from the source ----------------------------------------------------------------


def _comments(model: type) -> dict[str, str]:
    """The trailing comment of each field's line in the model's class body (its description)."""
    try:
        source = inspect.getsource(model)
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    found: dict[str, str] = {}
    for node in ast.parse(inspect.cleandoc("\n" + source) if source.startswith(" ") else source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            line = lines[node.end_lineno - 1] if node.end_lineno else ""
            if "#" in line and not line.strip().startswith("#"):
                found[node.target.id] = line.split("#", 1)[1].strip()
            else:
                above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
                if above.startswith("#"):
                    found[node.target.id] = above.lstrip("# ").strip()
    return found


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    origin = get_origin(annotation)
    if origin is not None and str(origin).endswith("Annotated"):
        return _type_name(get_args(annotation)[0])
    text = getattr(annotation, "__name__", None) or str(annotation)
    text = re.sub(r"fsbridge\.config\.(?:\w+\.)?", "", text)
    return _cell(text.replace("typing.", "").replace("pydantic.types.", ""))


def _default(field: FieldInfo) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return ""
    else:
        return "required"
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, float) and value >= 60 and value % 60 == 0:
        for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
            if value % seconds == 0:
                return f"`{int(value // seconds)}{unit}`"
    return f"`{orjson.dumps(value, default=str).decode()}`"


GENERIC = {  # a key's meaning wherever it appears
    "enabled": "whether it runs",
    "every": "how often the job runs (a duration)",
    "timeout_seconds": "how long one request may take",
    "concurrency": "requests in flight at once",
    "rate_limit_per_second": "requests a second at most (the token bucket's rate)",
    "burst": "requests the token bucket allows at once",
    "window_seconds": "the circuit breaker's window",
    "min_requests": "requests in the window before the breaker may open",
    "failure_ratio": "the share of failures that opens the breaker",
    "open_seconds": "how long an open breaker waits before it probes",
    "event_name": "the Segment event name it sends",
    "cache_for": "how long a look-up's answer is kept",
}


def _shipped_comments() -> dict[str, str]:
    """The comment beside each key of the shipped config/fsbridge.yaml, by its dotted path."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (ROOT / "config" / "fsbridge.yaml").read_text().splitlines():
        match = re.match(r"^( *)([A-Za-z_][A-Za-z0-9_]*):(.*)$", line)
        if not match:
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if "#" in rest:
            found[".".join(k for _, k in stack)] = rest.split("#", 1)[1].strip()
    return found


SHIPPED = _shipped_comments()


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    comments = _comments(model)
    rows: list[str] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        annotation = field.annotation
        nested = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        description = _cell(
            field.description or comments.get(name) or SHIPPED.get(key) or GENERIC.get(name, "")
        )
        if nested is None:
            rows.append(f"| `{key}` | {_type_name(annotation)} | {_default(field)} | {description} |")
            continue
        doc = (nested.__doc__ or "").strip().replace("\n", " ").replace("|", "\\|")
        rows.append(f"| `{key}` | object | | {description or doc} |")
        rows += _rows(nested, key)
    return rows


def _table(model: type[BaseModel], prefix: str) -> str:
    head = "| key | type | default | description |\n|---|---|---|---|\n"
    return head + "\n".join(_rows(model, prefix)) + "\n"


# -- the renderers ---------------------------------------------------------------------------------


def configuration(_: str | None) -> str:
    from fsbridge.config import FsbridgeConfig

    return _table(FsbridgeConfig, "")


def environment(_: str | None) -> str:
    from fsbridge.settings import Settings

    comments = _comments(Settings)
    rows = ["| variable | type | default | description |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        secret = "SecretStr" in str(field.annotation)
        default = "none" if field.default is None else ("" if secret else _default(field))
        rows.append(
            f"| `FSBRIDGE_{name.upper()}` | {'secret' if secret else _type_name(field.annotation)} | {default} |"
            f" {comments.get(name, '')} |"
        )
    return "\n".join(rows) + "\n"


def cli(_: str | None) -> str:
    import typer

    from fsbridge.cli import app

    out: list[str] = []

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "commands"):  # a group (typer's own click lives under typer._click)
            for name in sorted(command.commands):
                walk(command.commands[name], [*path, name])
            return
        arguments = [p for p in command.params if p.param_type_name == "argument"]
        options = [p for p in command.params if p.param_type_name == "option"]
        usage = " ".join(["fsbridge", *path, *((p.name or "").upper() for p in arguments), "[OPTIONS]" if options else ""])
        out.append(f"## `fsbridge {' '.join(path)}`\n")
        out.append(f"`{usage.strip()}`\n")
        out.append((command.help or "").strip() + "\n")
        if arguments or options:
            out.append("| argument or option | default | description |\n|---|---|---|")
            for p in arguments:
                out.append(f"| `{(p.name or '').upper()}` | | {_cell(getattr(p, 'help', '') or '')} |")
            for o in options:
                default = "" if o.default in (None, False) or callable(o.default) else f"`{o.default}`"
                out.append(f"| `{', '.join(o.opts)}` | {default} | {_cell(o.help or '')} |")
            out.append("")

    walk(typer.main.get_command(app), [])
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def http(_: str | None) -> str:
    from fsbridge.app import create_app
    from fsbridge.config import FsbridgeConfig
    from fsbridge.runtime import Runtime
    from fsbridge.settings import Settings

    with tempfile.TemporaryDirectory() as folder:
        runtime = Runtime(Settings(_env_file=None, database_url=f"sqlite:///{folder}/docs.db"), FsbridgeConfig())
        document = _openapi(create_app(runtime, manage_runtime=False))
    out = ["| method and path | summary | answers |", "|---|---|---|"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            answers = ", ".join(sorted(operation.get("responses", {})))
            out.append(f"| `{method.upper()} {path}` | {operation.get('summary', '')} | {answers} |")
    return "\n".join(out) + "\n"


def _openapi(app: Any) -> dict[str, Any]:
    import asyncio

    import httpx

    async def fetch() -> dict[str, Any]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://docs") as client:
            document: dict[str, Any] = (await client.get("/openapi.json")).json()
            return document

    return asyncio.run(fetch())


def metrics(_: str | None) -> str:
    from prometheus_client.metrics import MetricWrapperBase

    from fsbridge.ops.metrics import Metrics

    out = ["| metric | type | labels | description |", "|---|---|---|---|"]
    registered = Metrics()
    wrappers = [m for m in vars(registered).values() if isinstance(m, MetricWrapperBase)]
    for family in sorted(registered.registry.collect(), key=lambda f: f.name):
        wrapper = next((w for w in wrappers if w._name == family.name), None)  # noqa: SLF001 - label names
        labels = wrapper._labelnames if wrapper is not None else sorted({k for s in family.samples for k in s.labels})  # noqa: SLF001
        name = family.name + ("_total" if family.type == "counter" else "")
        out.append(f"| `{name}` | {family.type} | {', '.join(labels)} | {family.documentation} |")
    return "\n".join(out) + "\n"


def flow(name: str | None) -> str:
    from fsbridge.config import FlowsConfig

    assert name is not None
    parts: list[str] = []
    field = FlowsConfig.model_fields.get(name)
    if field is not None and isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
        parts += ["## Keys\n", _table(field.annotation, f"flows.{name}")]
    parts.append(_golden(name))
    return "\n".join(parts)


def _golden(name: str) -> str:
    cases = sorted((GOLDEN / name).glob("*.in.json")) or sorted((GOLDEN_AGGREGATIONS / name).glob("*.in.json"))
    sending = [c for c in cases if c.with_name(c.name.replace(".in.json", ".out.json")).exists()]
    if not (sending or cases):
        return ""
    case = (sending or cases)[0]  # an example that sends something
    output = case.with_name(case.name.replace(".in.json", ".out.json"))
    relative = case.relative_to(ROOT)
    text = [f"## An example\n\nFrom the golden examples (`{relative}`), which the test suite checks:\n",
            f"Input:\n\n```json\n{_pretty(case)}\n```\n"]  # fmt: skip
    enriched = case.with_name(case.name.replace(".in.json", ".enriched.json"))
    if enriched.exists():
        text.append(f"What the look-ups answered:\n\n```json\n{_pretty(enriched)}\n```\n")
    text.append(f"What the flow sends:\n\n```json\n{_pretty(output) if output.exists() else 'nothing'}\n```\n")
    return "\n".join(text)


def _pretty(path: Path) -> str:
    return orjson.dumps(orjson.loads(path.read_bytes()), option=orjson.OPT_INDENT_2).decode()


def job(name: str | None) -> str:
    from fsbridge.config import JobsConfig

    assert name is not None
    field = JobsConfig.model_fields[name]
    assert isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    return "## Keys\n\n" + _table(field.annotation, f"jobs.{name}")


def benchmarks(_: str | None) -> str:
    table = ROOT / "docs" / "performance-table.md"
    return table.read_text() if table.exists() else "No `make bench` run is recorded yet.\n"


RENDERERS = {
    "configuration": configuration,
    "environment": environment,
    "cli": cli,
    "http": http,
    "metrics": metrics,
    "flow": flow,
    "job": job,
    "benchmarks": benchmarks,
}
