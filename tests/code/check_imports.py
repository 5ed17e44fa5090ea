#!/usr/bin/env python3
"""The shared crate's modules form no import circle: each module's `crate::`
references (outside its unit tests) point only at modules below it, so a
reader can take them bottom up. Prints the order, or the circle found."""
import pathlib, re, sys

src = pathlib.Path(__file__).resolve().parents[2] / "shared" / "src"


def module_of(path):
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return parts[0] if parts else "lib"


graph = {}
for path in sorted(src.rglob("*.rs")):
    module = module_of(path)
    if module == "lib":
        continue
    text = path.read_text()
    # Unit tests may reach anywhere: only the module's own code counts.
    text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
    text = re.sub(r"//[^\n]*", "", text)
    used = set(re.findall(r"\bcrate::(\w+)", text))
    # `use crate::{a, b::c}` groups.
    for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
        used |= {item.strip().split("::")[0] for item in group.split(",") if item.strip()}
    graph.setdefault(module, set()).update(m for m in used if m != module)

order, state = [], {}


def visit(module, stack):
    if state.get(module) == "done":
        return
    if state.get(module) == "open":
        circle = stack[stack.index(module):] + [module]
        print("import circle: " + " -> ".join(circle))
        sys.exit(1)
    state[module] = "open"
    for dependency in sorted(graph.get(module, ())):
        if dependency in graph:
            visit(dependency, stack + [module])
    state[module] = "done"
    order.append(module)


for module in sorted(graph):
    visit(module, [])
print(f"imports: {len(graph)} modules, no circle; bottom up: {' '.join(order)}")
