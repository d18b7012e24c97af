"""Reading the hub's own DDL text (sql/0001_init.up.sql) into parts.

Adoption (hub/adopt.py) brings an existing database to what 0001 would have
made, so 0001 stays the one place that says what the schema is. This is not a
general SQL parser: it reads the plain forms 0001 is written in. `outline`
lists any migration's statements for `hub migrate --dry-run`.
"""

from __future__ import annotations

import dataclasses
import re

_DOLLAR = re.compile(r"\$[A-Za-z_]*\$")


def _skip_quoted(sql: str, i: int) -> int:
    """The index just past the string or dollar-quoted body starting at `i`, else `i`."""
    if sql[i] == "'":
        j = i + 1
        while True:
            j = sql.index("'", j)
            if sql.startswith("''", j):
                j += 2
                continue
            return j + 1
    if sql[i] == "$":
        m = _DOLLAR.match(sql, i)
        if m:
            return sql.index(m.group(), m.end()) + len(m.group())
    return i


def statements(sql: str) -> list[str]:
    """The statements of a script, without comments, in order."""
    out, buf, i, start = [], [], 0, 0
    while i < len(sql):
        if sql.startswith("--", i):
            buf.append(sql[start:i])
            i = sql.find("\n", i)
            i = len(sql) if i < 0 else i
            start = i
            continue
        j = _skip_quoted(sql, i)
        if j != i:
            i = j
            continue
        if sql[i] == ";":
            buf.append(sql[start:i])
            text = "".join(buf).strip()
            if text:
                out.append(text)
            buf, start = [], i + 1
        i += 1
    text = "".join(buf + [sql[start:]]).strip()
    if text:
        out.append(text)
    return out


def split(text: str, sep: str = ",") -> list[str]:
    """`text` split at `sep` outside parentheses and quotes; sep ' ' splits at whitespace."""
    parts, depth, i, start = [], 0, 0, 0
    while i < len(text):
        j = _skip_quoted(text, i)
        if j != i:
            i = j
            continue
        c = text[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif depth == 0 and (c == sep or (sep == " " and c.isspace())):
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def group(text: str, start: int = 0) -> tuple[str, int]:
    """The inside of the first parenthesized group at or after `start`, and the index past it."""
    i = text.index("(", start)
    depth, j = 0, i
    while True:
        k = _skip_quoted(text, j)
        if k != j:
            j = k
            continue
        if text[j] == "(":
            depth += 1
        elif text[j] == ")":
            depth -= 1
            if depth == 0:
                return text[i + 1:j], j + 1
        j += 1


_CLAUSES = {"NOT", "NULL", "DEFAULT", "CHECK", "REFERENCES", "PRIMARY", "UNIQUE", "GENERATED", "CONSTRAINT"}


@dataclasses.dataclass
class Column:
    name: str
    type: str
    text: str                      # the whole definition, as ADD COLUMN takes it
    not_null: bool = False
    default: str | None = None
    checks: list[str] = dataclasses.field(default_factory=list)
    references: str | None = None  # "auth.users(id) ON DELETE CASCADE"
    primary_key: bool = False
    unique: bool = False
    generated: str | None = None


def column(text: str) -> Column:
    words = split(text, " ")
    name, i = words[0], 1
    kind = []
    while i < len(words) and words[i].upper() not in _CLAUSES:
        kind.append(words[i])
        i += 1
    col = Column(name, " ".join(kind), text)
    while i < len(words):
        word = words[i].upper()
        if word == "NOT":
            col.not_null, i = True, i + 2
        elif word == "DEFAULT":
            j = i + 1
            while j < len(words) and words[j].upper() not in _CLAUSES:
                j += 1
            col.default, i = " ".join(words[i + 1:j]), j
        elif word == "CHECK":
            col.checks.append(group(text, text.index(words[i + 1]))[0])
            i += 2
        elif word == "REFERENCES":
            j = i + 1
            while j < len(words) and words[j].upper() not in _CLAUSES - {"NULL"}:
                j += 1
            col.references, i = " ".join(words[i + 1:j]), j
        elif word == "PRIMARY":
            col.primary_key, i = True, i + 2
        elif word == "UNIQUE":
            col.unique, i = True, i + 1
        elif word == "GENERATED":
            col.generated = group(text, text.upper().index("GENERATED"))[0]
            i = len(words)
        else:
            i += 1
    return col


@dataclasses.dataclass
class Table:
    name: str                               # schema-qualified
    columns: list[Column]
    constraints: list[str]                  # table constraints, as written

    @property
    def primary_key(self) -> list[str]:
        for c in self.constraints:
            if c.upper().startswith("PRIMARY KEY"):
                return [p.strip() for p in group(c)[0].split(",")]
        return [col.name for col in self.columns if col.primary_key]


def table(statement: str) -> Table:
    name = re.match(r"CREATE TABLE ([\w.]+)", statement).group(1)
    columns, constraints = [], []
    for item in split(group(statement)[0]):
        if item.split()[0].upper() in {"CONSTRAINT", "PRIMARY", "UNIQUE", "EXCLUDE", "CHECK", "FOREIGN"}:
            constraints.append(item)
        else:
            columns.append(column(item))
    return Table(name, columns, constraints)


def function_identity(statement: str) -> tuple[str, str]:
    """("public.has_role", "uuid, public.app_role") for a CREATE FUNCTION."""
    name = re.match(r"CREATE FUNCTION ([\w.]+)", statement).group(1)
    types = []
    for arg in split(group(statement)[0]):
        words = split(arg, " ")
        if "DEFAULT" in (w.upper() for w in words):
            words = words[:[w.upper() for w in words].index("DEFAULT")]
        types.append(" ".join(words[1:]))
    return name, ", ".join(types)


def function_body(statement: str) -> str:
    m = re.search(r"(\$[A-Za-z_]*\$)(.*?)\1", statement, re.S)
    return m.group(2) if m else ""


def enum_labels(statement: str) -> list[str]:
    return [label.strip().strip("'") for label in split(group(statement)[0])]



def outline(sql: str, width: int = 110) -> list[str]:
    """One line per statement of a script, bodies elided, for `hub migrate --dry-run`."""
    try:
        parts = statements(sql)
    except ValueError:  # an unterminated quote: PostgreSQL will say where
        return ["(statements not listed: the file has an unterminated quote)"]
    lines = []
    for s in parts:
        line = " ".join(re.sub(r"(\$[A-Za-z_]*\$).*?\1", r"\1…\1", s, flags=re.S).split())
        lines.append(line if len(line) <= width else line[:width - 1] + "…")
    return lines
