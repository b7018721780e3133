"""clew's own metrics, declared once (name, kind, unit, help) by the component that owns them and
rendered to OpenMetrics text for `/metrics` from those declarations.

A small renderer rather than prometheus_client's registry: clew's samples are read from the store
at scrape time (per tenant, with exemplars pointing at traces on counters and histogram buckets),
which maps onto plain values more simply than onto client-side collectors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Metric:
    name: str  # without `_total`: OpenMetrics adds it to a counter's samples
    kind: Kind
    help: str
    unit: str = ""  # written as `# UNIT` when the name ends with it, as OpenMetrics requires


@dataclass(frozen=True, slots=True)
class Exemplar:
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class Sample:
    metric: Metric
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    exemplar: Exemplar | None = None
    suffix: str = ""  # a histogram's `_bucket`, `_sum` or `_count`


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def label_text(pairs: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in pairs.items()) + "}" if pairs else ""


def number(value: float) -> str:
    """Exact: `:g` would round a count past a million to six digits."""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 2**53):
        return str(int(value))
    return repr(float(value))


def _sample_name(sample: Sample) -> str:
    if sample.metric.kind == "counter":
        return f"{sample.metric.name}_total"
    return sample.metric.name + sample.suffix


def render(declared: Sequence[Metric], samples: Iterable[Sample]) -> str:
    """OpenMetrics text: every declared metric in declaration order, each with its samples."""
    by_name: dict[str, list[Sample]] = {m.name: [] for m in declared}
    for sample in samples:
        if by_name.get(sample.metric.name) is None and sample.metric not in declared:
            raise ValueError(f"metric {sample.metric.name} is not declared")
        by_name[sample.metric.name].append(sample)
    lines: list[str] = []
    for metric in declared:
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        if metric.unit and metric.name.endswith(f"_{metric.unit}"):
            lines.append(f"# UNIT {metric.name} {metric.unit}")
        lines.append(f"# HELP {metric.name} {escape(metric.help)}")
        for s in by_name[metric.name]:
            exemplar = ""
            if s.exemplar is not None:
                exemplar = f" # {label_text(s.exemplar.labels)} {number(s.exemplar.value)}"
            lines.append(f"{_sample_name(s)}{label_text(s.labels)} {number(s.value)}{exemplar}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"
