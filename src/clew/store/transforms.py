"""The processors that run inside the insert, as SQL: what each does to the parsed columns.

A processor's SQL reads columns as `{in:COLUMN}`: the column as the stages before it left it (the
parsed value for the first). Shared intermediate results are named once (`aliases`, a `WITH` of the
insert), so a large expression is analysed once per insert however many columns use it. A stage may
also fill a column the parse does not produce (the retention tier), and bring query parameters
(redaction's hash key) that travel with every insert.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_INPUT = re.compile(r"\{in:([a-z_]+)\}")


@dataclass(frozen=True, slots=True)
class Transforms:
    columns: dict[str, str]  # column -> SQL over `{in:...}`
    aliases: dict[str, str] = field(default_factory=dict)  # WITH name -> SQL over `{in:...}`
    params: dict[str, object] = field(default_factory=dict)  # query parameters the SQL names

    def resolve(self, column_sql: dict[str, str]) -> Transforms:
        """Inputs bound to `column_sql` (column -> SQL) where given, left as `{in:...}` otherwise."""

        def bind(sql: str) -> str:
            return _INPUT.sub(lambda m: column_sql.get(m.group(1), m.group(0)), sql)

        return Transforms(
            {k: bind(v) for k, v in self.columns.items()},
            {k: bind(v) for k, v in self.aliases.items()},
            self.params,
        )


def compose(*stages: Transforms) -> Transforms:
    """Stages applied in order: a later stage reads what the earlier ones made of each column."""
    out = Transforms({})
    for stage in stages:
        bound = stage.resolve(out.columns)
        out = Transforms(
            {**out.columns, **bound.columns}, {**out.aliases, **bound.aliases}, {**out.params, **bound.params}
        )
    return out
