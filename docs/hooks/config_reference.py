"""MkDocs hook: the configuration reference, generated from the config dataclasses at build time.

``docs/guide/configuration.md`` holds the marker ``<!-- config-reference -->``; this hook replaces
it with one table per config section (``data``, ``data.coco``, ``train.augment``, ...): each key's
type and default from ``dataclasses.fields`` of ``study.config.StudyConfig`` and the sections
nested in it, the comment written above or beside the field in ``study/config/*.py`` (read with
``tokenize``), and the checks its ``__post_init__`` makes (read with ``ast``). The section's class
docstring introduces its table. Nothing is written by hand, so the reference cannot drift from the
code: a new key, a changed default or a new comment shows on the next ``make docs``.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import io
import os
import re
import sys
import tokenize
from typing import Any

MARKER = "<!-- config-reference -->"
PAGE = "guide/configuration.md"

# Where each section is explained at length (paths relative to docs/guide/configuration.md).
SEE_ALSO = {
    "": "../getting-started.md",
    "ray": "cluster.md",
    "data": "inputs.md",
    "data.coco": "inputs.md#coco-style-annotations",
    "data.voc": "inputs.md#imagenet-style-class-folders-with-pascal-voc-boxes",
    "data.hf": "inputs.md#hugging-face-datasets",
    "annotate": "annotation.md",
    "splits": "../concepts/index.md#splits",
    "splits.near_duplicates": "inputs.md#splits-that-match-the-papers",
    "model": "training.md#methods-and-backbones",
    "train": "training.md",
    "train.augment": "training.md#views",
    "train.text_randomization": "../concepts/vlm-dejavu.md#text-randomization",
    "embed": "../scaling/index.md#embedding",
    "embed.crop": "../concepts/ssl-dejavu.md#the-background-crop",
    "search": "../scaling/search.md",
    "search.ivf": "../scaling/search.md#automatic-parameters-faisss-guidelines-to-choose-an-index",
    "measure": "../concepts/statistics.md",
    "sslmem": "../concepts/sslmem.md",
    "report": "reports.md",
}


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    if page.file.src_uri != PAGE or MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference(os.path.dirname(config["config_file_path"])))


def reference(repo_root: str) -> str:
    """The whole reference: the top-level keys, then every section in field order."""
    if repo_root not in sys.path:
        sys.path.insert(0, repo_root)  # the package from this checkout even where it is not installed
    config = importlib.import_module("study.config")
    out: list[str] = []
    for prefix, obj in _sections(config.StudyConfig(), ""):
        out.append(_section(prefix, obj))
    return "\n".join(out)


def _sections(obj: Any, prefix: str):
    """(dotted prefix, instance) for a config section and, depth first, the sections inside it."""
    yield prefix, obj
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _sections(value, f"{prefix}.{f.name}" if prefix else f.name)


def _section(prefix: str, obj: Any) -> str:
    cls = type(obj)
    notes = _field_comments(cls)
    checks = _field_checks(cls, obj)
    title = f"`{prefix}`" if prefix else "Top level"
    lines = [f"### {title}", ""]
    doc = ast.get_docstring(_class_node(cls)[0]) or ""  # not __doc__: dataclasses make one up
    if doc:
        lines += [_rst_to_md(doc), ""]
    source = os.path.relpath(inspect.getsourcefile(cls), os.path.dirname(os.path.dirname(inspect.getsourcefile(
        importlib.import_module("study")))))
    see = SEE_ALSO.get(prefix)
    tail = f" Explained in [{_page_title(see)}]({see})." if see else ""
    lines += [f"Class `{cls.__name__}` in `{source}`.{tail}", ""]
    lines += ["| key | type | default | what it is |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        text = notes.get(f.name, "")
        # A check names the key itself, or an entry of it (``splits.fractions.target``).
        messages = [m if k == key else f"`{k[len(key) + 1:]}` {m}"
                    for k, ms in checks.items() if k == key or k.startswith(key + ".") for m in ms]
        if messages:
            checked = "; ".join(messages)
            text = f"{text.rstrip('.')}. *Checked:* {checked}." if text else f"*Checked:* {checked}."
        if dataclasses.is_dataclass(value):
            text = f"a section: see [`{key}`](#{_anchor(key)}). {text}".strip()
            lines.append(f"| `{key}` | `{type(value).__name__}` | | {_cell(text)} |")
            continue
        # The declared default, not the instance's: a section's __post_init__ may resolve it
        # (``measure.one_model_tagger: auto`` becomes a tagger or off, by data source).
        if f.default is not dataclasses.MISSING:
            value = f.default
        lines.append(f"| `{key}` | `{_cell(str(f.type))}` | {_default(value)} | {_cell(text)} |")
    lines.append("")
    return "\n".join(lines)


def _page_title(link: str) -> str:
    return link.split("#")[-1].replace("-", " ") if "#" in link else \
        os.path.splitext(os.path.basename(link))[0].replace("-", " ").replace("index", "overview")


def _anchor(key: str) -> str:
    """The id MkDocs' toc extension gives the heading "`key`"."""
    return re.sub(r"[^\w\- ]", "", key.lower()).strip().replace(" ", "-")


def _default(value: Any) -> str:
    text = _yaml(value)
    return f"`{_cell(text)}`"


def _yaml(value: Any) -> str:
    """A default as it would be written in a YAML config (flow style)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value and re.fullmatch(r"[\w.\-/]+", value) else f'"{value}"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict) or hasattr(value, "items"):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float) and value == int(value) and abs(value) < 1e15:
        return f"{value:.1f}"
    return str(value)


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def _rst_to_md(text: str) -> str:
    """Docstrings write code as ``x``; Markdown as `x`. Paragraphs are kept, lines joined."""
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return "\n\n".join(paragraphs)


def _class_node(cls: type) -> tuple[ast.ClassDef, list[str]]:
    path = inspect.getsourcefile(cls)
    with open(path, encoding="utf-8") as fh:
        source = fh.read()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            return node, source.splitlines()
    raise LookupError(f"class {cls.__name__} not found in {path}")


def _field_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment block right above it plus any comment on its own lines."""
    node, lines = _class_node(cls)
    comments: dict[int, str] = {}  # line number (1-based) -> comment text
    tokens = tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline)
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    out: dict[str, str] = {}
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        above = []
        row = stmt.lineno - 1
        while row >= 1 and lines[row - 1].strip().startswith("#"):
            above.insert(0, comments.get(row, ""))
            row -= 1
        beside = [comments[r] for r in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1) if r in comments]
        text = " ".join(t for t in above + beside if t)
        out[stmt.target.id] = re.sub(r"``([^`]+)``", r"`\1`", text)
    return out


def _field_checks(cls: type, instance: Any) -> dict[str, list[str]]:
    """Dotted key -> the messages ``__post_init__`` raises for it (``check(ok, key, message)``).

    Messages that depend on the instance's values (they name ``self``) are left out: they describe
    one config, not the key. ``for key in (...)`` loops over literal names are unrolled.
    """
    node, _ = _class_node(cls)
    post = next((s for s in node.body if isinstance(s, ast.FunctionDef) and s.name == "__post_init__"), None)
    if post is None:
        return {}
    namespace = vars(sys.modules[cls.__module__])
    found: dict[str, list[str]] = {}

    def evaluate(expr: ast.expr, env: dict) -> Any:
        if any(isinstance(n, ast.Name) and n.id == "self" for n in ast.walk(expr)):
            raise ValueError("depends on the instance")
        return eval(compile(ast.Expression(expr), "<check>", "eval"), dict(namespace), dict(env))

    def visit(stmts: list[ast.stmt], env: dict) -> None:
        for stmt in stmts:
            if isinstance(stmt, ast.For) and isinstance(stmt.target, ast.Name):
                try:
                    values = evaluate(stmt.iter, env)
                except Exception:
                    continue
                for value in values:
                    visit(stmt.body, {**env, stmt.target.id: value})
            elif isinstance(stmt, ast.If):
                visit(stmt.body, env)
                visit(stmt.orelse, env)
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
                call = stmt.value
                name = call.func.id if isinstance(call.func, ast.Name) else ""
                if name not in ("_check", "check") or len(call.args) != 3:
                    continue
                try:
                    key, message = evaluate(call.args[1], env), evaluate(call.args[2], env)
                except Exception:
                    continue
                if isinstance(key, str) and isinstance(message, str):
                    found.setdefault(key, [])
                    if message not in found[key]:
                        found[key].append(message)

    visit(post.body, {})
    return found


if __name__ == "__main__":  # print the reference, for a look without building the site
    print(reference(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
