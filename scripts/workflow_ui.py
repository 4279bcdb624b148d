"""UI-format (graph editor) workflows from the API-format ones, and back.

The API files in workflows/api/ are the source; `python scripts/workflow_ui.py` starts the real
server, takes its /object_info, and writes each `<name>.api.json` as `workflows/<name>.json`
for the frontend, where ComfyUI lists it as one of the pack's templates (thumbnail `<name>.jpg`,
written by `scripts/demo.py --thumbnails`).
``ui_to_api`` reads a UI file back the way the frontend queues it, which the tests use
to check that both files describe the same graph.

Widget values follow the frontend's rule: inputs in the node's input order, and an INT input
with ``control_after_generate`` (or named seed / noise_seed) has a second value, its control mode.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _inputs(info: dict) -> list[tuple[str, list]]:
    """(name, spec) of a node's inputs in the order the frontend makes its slots and widgets."""
    order = info.get("input_order", {})
    specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    names = order.get("required", list(info["input"].get("required", {}))) + \
        order.get("optional", list(info["input"].get("optional", {})))
    return [(n, specs[n]) for n in names]


def _is_widget(spec: list) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def _has_control(name: str, spec: list) -> bool:
    options = spec[1] if len(spec) > 1 else {}
    return options.get("control_after_generate", False) or (spec[0] == "INT" and name in ("seed", "noise_seed"))


def _depths(api: dict) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(node_id: str) -> int:
        if node_id not in depth:
            links = [v[0] for v in api[node_id]["inputs"].values() if isinstance(v, list)]
            depth[node_id] = 1 + max((visit(str(n)) for n in links), default=-1)
        return depth[node_id]

    for node_id in api:
        visit(node_id)
    return depth


def api_to_ui(api: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    depth = _depths(api)
    order = sorted(api, key=lambda n: (depth[n], int(n)))
    nodes, links, rows = {}, [], {}
    for position, node_id in enumerate(order):
        node = api[node_id]
        info = object_info[node["class_type"]]
        row = rows[depth[node_id]] = rows.get(depth[node_id], -1) + 1
        widgets = [(n, s) for n, s in _inputs(info) if _is_widget(s)]
        sockets = [(n, s) for n, s in _inputs(info) if not _is_widget(s)]
        ui_inputs = [{"name": n, "type": s[0], "link": None} for n, s in sockets]
        values = []
        for name, spec in widgets:
            value = node["inputs"].get(name, (spec[1] if len(spec) > 1 else {}).get("default"))
            if isinstance(value, list):  # a widget fed by a link becomes an input slot
                ui_inputs.append({"name": name, "type": spec[0] if isinstance(spec[0], str) else "COMBO",
                                  "link": None, "widget": {"name": name}})
                value = (spec[1] if len(spec) > 1 else {}).get("default")
            values.append(value)
            if _has_control(name, spec):
                values.append("fixed")
        nodes[node_id] = {
            "id": int(node_id), "type": node["class_type"], "pos": [40 + 360 * depth[node_id], 40 + 330 * row],
            "size": [320, 60 + 24 * (len(widgets) + len(sockets))], "flags": {}, "order": position, "mode": 0,
            "inputs": ui_inputs,
            "outputs": [{"name": name, "type": kind, "links": [], "slot_index": i}
                        for i, (kind, name) in enumerate(zip(info["output"], info["output_name"]))],
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": values}
    for node_id in order:
        for slot in nodes[node_id]["inputs"]:
            value = api[node_id]["inputs"].get(slot["name"])
            if not isinstance(value, list):
                continue
            link_id = len(links) + 1
            source, source_slot = str(value[0]), value[1]
            slot["link"] = link_id
            nodes[source]["outputs"][source_slot]["links"].append(link_id)
            links.append([link_id, int(source), source_slot, int(node_id),
                          nodes[node_id]["inputs"].index(slot), slot["type"]])
    return {"last_node_id": max(int(n) for n in api), "last_link_id": len(links),
            "nodes": [nodes[n] for n in order], "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


def ui_to_api(ui: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """The prompt the frontend would queue for a UI-format workflow."""
    links = {link[0]: link for link in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        if node.get("mode", 0) != 0:
            continue
        info = object_info[node["type"]]
        inputs: dict[str, Any] = {}
        values = list(node.get("widgets_values", []))
        for name, spec in _inputs(info):
            if _is_widget(spec):
                inputs[name] = values.pop(0)
                if _has_control(name, spec):
                    values.pop(0)
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def ui_twin(api_path: Path) -> Path:
    """workflows/<name>.json for workflows/api/[sd/]<name>.api.json."""
    return REPO / "workflows" / api_path.name.replace(".api.json", ".json")


def main() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    from comfy_server import ComfyServer

    base = REPO / "out" / "server-ui"
    shutil.rmtree(base, ignore_errors=True)
    with ComfyServer(base) as server:
        for path in sorted((REPO / "workflows" / "api").rglob("*.api.json")):
            ui = api_to_ui(json.loads(path.read_text()), server.object_info)
            target = ui_twin(path)
            target.write_text(json.dumps(ui, indent=1) + "\n")
            print(f"{path.name} → {target.name}: {len(ui['nodes'])} nodes, {len(ui['links'])} links")


if __name__ == "__main__":
    main()
