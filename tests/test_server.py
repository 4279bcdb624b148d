"""End to end: a real headless ComfyUI server with the pack loaded runs the workflows."""
import json

import pytest
import requests
import torch
from comfy_server import PACK_NAME, REPO, ComfyServer, pack_node_ids
from PIL import Image
from safetensors.torch import save_file
from workflow_ui import api_to_ui, ui_to_api, ui_twin

from comfy_hspace import directions as D
from comfy_hspace.directions import TIME_INVARIANT

WORKFLOWS = sorted((REPO / "workflows" / "api").glob("*.api.json"))  # on the embedded model: run here
ALL_WORKFLOWS = sorted((REPO / "workflows" / "api").rglob("*.api.json"))  # sd/: need the user's checkpoint


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy")
    bad = D.Directions(torch.randn(1, 1, 32, 8, 8), torch.tensor([TIME_INVARIANT]), ["bad"])
    meta = D._metadata(bad)
    v = bad.vectors.clone()
    v[0, 0, 1] = float("nan")
    (base / "models" / "hspace_directions").mkdir(parents=True)
    save_file({"directions": v, "timesteps": bad.timesteps},
              str(base / "models" / "hspace_directions" / "nan.safetensors"),
              metadata=meta)
    with ComfyServer(base) as s:
        yield s


def test_server_lists_every_ui_workflow_as_a_template_with_a_thumbnail(server):
    templates = requests.get(server.url + "/workflow_templates", timeout=30).json()
    names = sorted(p.stem for p in (REPO / "workflows").glob("*.json"))
    assert sorted(templates[PACK_NAME]) == names == sorted(ui_twin(w).stem for w in ALL_WORKFLOWS)
    for name in names:  # as the frontend fetches them
        r = requests.get(f"{server.url}/api/workflow_templates/{PACK_NAME}/{name}.json", timeout=30)
        assert r.status_code == 200 and r.json()["nodes"]
        r = requests.get(f"{server.url}/api/workflow_templates/{PACK_NAME}/{name}.jpg", timeout=30)
        assert r.status_code == 200 and r.content[:3] == b"\xff\xd8\xff", f"{name}.jpg: no JPEG thumbnail"


def test_node_help_pages_are_served_and_up_to_date(server):
    import node_docs

    pages = node_docs.pages()
    assert sorted(pages) == sorted(pack_node_ids())
    for node_id, text in pages.items():
        assert (node_docs.DOCS / f"{node_id}.md").read_text() == text, "run scripts/node_docs.py"
        r = requests.get(f"{server.url}/extensions/{PACK_NAME}/docs/{node_id}.md", timeout=30)  # as the frontend asks
        assert r.status_code == 200 and r.text == text
    assert "| rho | STRING | 1.0 |" in pages["HSpaceAVILatentMerge"]


# Every node id the pack registers; workflows and saved graphs refer to them, so they never change.
NODE_IDS = [
    "HSpaceAVILatentMerge", "HSpaceAVITrainer", "HSpaceApplyEdit", "HSpaceAttributeDirection", "HSpaceBlock",
    "HSpaceCombineDirections", "HSpaceDirectionReport", "HSpaceDirectionSweepGrid", "HSpaceDiscoveryTrainer",
    "HSpaceDisentangle", "HSpaceEditedSampler", "HSpaceEmbeddedFacesModel", "HSpaceFaceImages", "HSpaceFaceLabels",
    "HSpaceFaceRegionMask", "HSpaceFaceScores", "HSpaceHook", "HSpaceInvertImage", "HSpaceJacobianDirections",
    "HSpaceLatentSingularValues", "HSpaceLoadAVIPhi", "HSpaceLoadActivations", "HSpaceLoadDirections",
    "HSpaceMergeActivations", "HSpaceNullConditioning", "HSpacePCADirections", "HSpacePixelDDPMLoader",
    "HSpaceRandomDirections", "HSpaceResizeDirections", "HSpaceSaveActivations", "HSpaceSaveDirections",
    "HSpaceScaleDirections", "HSpaceSelectDirections",
]


def test_object_info_lists_the_pack_with_direction_sockets(server):
    info = server.object_info
    ours = sorted(n for n, v in info.items() if PACK_NAME in str(v.get("python_module", "")))
    assert ours == NODE_IDS and sorted(pack_node_ids()) == NODE_IDS
    assert info["HSpaceEditedSampler"]["input"]["required"]["directions"][0] == "HSPACE_DIRECTIONS"
    assert info["HSpaceSaveDirections"]["input"]["required"]["directions"][0] == "HSPACE_DIRECTIONS"
    assert info["HSpaceLoadDirections"]["output"] == ["HSPACE_DIRECTIONS"]
    assert "nan.safetensors" in info["HSpaceLoadDirections"]["input"]["required"]["filename"][1]["options"]


@pytest.mark.parametrize("workflow", ALL_WORKFLOWS, ids=[w.name for w in ALL_WORKFLOWS])
def test_ui_workflow_is_the_same_graph_as_its_api_twin(server, workflow):
    api = json.loads(workflow.read_text())
    ui = json.loads(ui_twin(workflow).read_text())
    assert ui_to_api(ui, server.object_info) == api
    assert ui == api_to_ui(api, server.object_info), "run scripts/workflow_ui.py to regenerate the UI file"
    types = {n["type"] for n in ui["nodes"]}
    assert all(t in server.object_info for t in types)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[w.name for w in WORKFLOWS])
def test_workflow_runs_and_writes_pngs(server, workflow):
    prompt = json.loads(workflow.read_text())
    files = server.output_files(server.run(prompt))
    assert files, "the workflow saved no image"
    for f in files:
        with Image.open(f) as im:
            assert im.format == "PNG" and im.size[0] >= 16


def test_sweep_workflow_gives_one_image_per_member(server):
    prompt = json.loads((REPO / "workflows" / "api" / "random_direction_strip.api.json").read_text())
    files = server.output_files(server.run(prompt))
    sweep = prompt["5"]["inputs"]["sweep"].split(",")
    assert len(files) == len(sweep) * prompt["3"]["inputs"]["batch_size"]
    with Image.open(files[0]) as im:
        assert im.size == (32, 32)


def test_a_nan_direction_file_fails_the_prompt_with_a_clear_message(server):
    prompt = json.loads((REPO / "workflows" / "api" / "random_direction_strip.api.json").read_text())
    prompt["4"] = {"class_type": "HSpaceLoadDirections", "inputs": {"filename": "nan.safetensors"}}
    with pytest.raises(RuntimeError, match="NaN or inf"):
        server.run(prompt)
    # the server keeps working afterwards
    assert server.output_files(server.run(json.loads((REPO / "workflows" / "api"
                                                      / "random_direction_strip.api.json").read_text())))
