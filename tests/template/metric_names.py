"""The metric names the code emits, read from shared/src/metrics.rs (Event::name
and the named constants): what the template's alarms and dashboard, and
the lines the functions write, are checked against."""
import pathlib, re

ROOT = pathlib.Path(__file__).resolve().parents[2]


def metric_names():
    source = (ROOT / "shared" / "src" / "metrics.rs").read_text()
    name_fn = source[source.index("pub fn name(self)"):source.index("/// Every metric name the code can emit")]
    names = set(re.findall(r'=> "([A-Za-z]+)"', name_fn))
    names |= set(re.findall(r'pub const (?:DEPENDENCY_ERRORS|RESPONSES|SERVER_ERRORS|ADMIN_ACTIONS): &str = "([A-Za-z]+)"', source))
    return names
