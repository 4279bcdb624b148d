"""Node help pages in the form ComfyUI's frontend fetches them: web/docs/<node id>.md (served at
/extensions/<pack>/docs/<node id>.md, shown in the node's help panel), written from each node's
own definition (description, inputs with type, default and tooltip, outputs), so they cannot
drift from the code. Run after changing a node: `.venv/bin/python scripts/node_docs.py`."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "web" / "docs"


def cell(value) -> str:
    """A value as one Markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def page(info: dict) -> str:
    """Markdown help for one node from its V1 node info."""
    lines = [f"# {info['display_name']}", "", info.get("description", ""), "", "## Inputs", "",
             "| input | type | default | what it is |", "| --- | --- | --- | --- |"]
    for section in ("required", "optional"):
        for name in info["input_order"].get(section, []):
            spec = info["input"][section][name]
            kind = "choice" if isinstance(spec[0], list) else spec[0]
            options = spec[1] if len(spec) > 1 else {}
            default = options.get("default", "")
            tip = options.get("tooltip") or ""
            if section == "optional":
                tip = f"(optional) {tip}".strip()
            lines.append(f"| {name} | {cell(kind)} | {cell(default)} | {cell(tip)} |")
    lines += ["", "## Outputs", "", "| output | type | what it is |", "| --- | --- | --- |"]
    for name, kind, tip in zip(info["output_name"], info["output"], info.get("output_tooltips") or []):
        lines.append(f"| {name} | {kind} | {tip or ''} |")
    return "\n".join(lines) + "\n"


def pages() -> dict[str, str]:
    """{node id: markdown} for every node of the pack."""
    sys.path.insert(0, str(REPO / "tests"))
    import conftest  # puts ComfyUI on the path and loads the pack as ComfyUI does

    return {n.GET_NODE_INFO_V1()["name"]: page(n.GET_NODE_INFO_V1()) for n in conftest.load_pack().nodes.NODES}


def main() -> None:
    DOCS.mkdir(parents=True, exist_ok=True)
    for old in DOCS.glob("*.md"):
        old.unlink()
    for node_id, text in pages().items():
        (DOCS / f"{node_id}.md").write_text(text)
    print(f"wrote {len(list(DOCS.glob('*.md')))} pages to {DOCS}")


if __name__ == "__main__":
    main()
