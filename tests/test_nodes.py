"""The direction nodes in-process, with ComfyUI's folder_paths pointed at a temporary folder."""
import folder_paths
import pytest
import torch
from safetensors.torch import save_file
from tiny_models import comfy_unet

from comfy_hspace import directions as D


@pytest.fixture()
def direction_folder(pack, tmp_path, monkeypatch):
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "hspace_directions", ([str(tmp_path)], {".safetensors"}))
    folder_paths.filename_list_cache.pop("hspace_directions", None)
    yield tmp_path
    folder_paths.filename_list_cache.pop("hspace_directions", None)


@pytest.fixture(scope="module")
def sd15():
    return comfy_unet("sd15")


def random_dirs(pack, model, size=16, count=3):
    lat = {"samples": torch.zeros(1, 4, size, size)}
    return pack.nodes.RandomDirections.execute(model=model, latent_image=lat, count=count, seed=1, rms=1.0).args[0]


def test_random_directions_fit_the_model_and_have_the_asked_rms(pack, sd15):
    d = random_dirs(pack, sd15)
    assert d.h_shape == (64, 8, 8) and d.count == 3
    assert torch.allclose(d.vectors.pow(2).mean(dim=(1, 2, 3, 4)).sqrt(), torch.ones(3), atol=1e-5)
    assert d.model_fingerprint.startswith("UNetModel:")


def test_save_then_load_through_the_nodes(pack, sd15, direction_folder):
    d = random_dirs(pack, sd15)
    path = pack.nodes.SaveDirections.execute(directions=d, filename="../../evil name", overwrite=False).args[0]
    assert path == str(direction_folder / "evil_name.safetensors")
    second = pack.nodes.SaveDirections.execute(directions=d, filename="evil name", overwrite=False).args[0]
    assert second.endswith("evil_name_00002.safetensors")
    loaded = pack.nodes.LoadDirections.execute(filename="evil_name.safetensors").args[0]
    assert torch.equal(loaded.vectors, d.vectors) and loaded.names == d.names
    with pytest.raises(ValueError, match="filename: '...' has no usable characters"):
        pack.nodes.SaveDirections.execute(directions=d, filename="...", overwrite=False)


def test_load_refuses_nan_and_foreign_files(pack, sd15, direction_folder):
    d = random_dirs(pack, sd15)
    v = d.vectors.clone()
    v[0, 0, 0, 0, 0] = float("inf")
    save_file({"directions": v, "timesteps": d.timesteps}, str(direction_folder / "bad.safetensors"),
              metadata=D._metadata(d))
    with pytest.raises(D.DirectionsError, match="bad.safetensors: directions: the tensor contains NaN or inf"):
        pack.nodes.LoadDirections.execute(filename="bad.safetensors")
    (direction_folder / "junk.safetensors").write_bytes(b"PK\x03\x04 zip, not safetensors")
    with pytest.raises(D.DirectionsError, match="junk.safetensors: not a readable safetensors file"):
        pack.nodes.LoadDirections.execute(filename="junk.safetensors")
    with pytest.raises(ValueError, match="filename: 'absent.safetensors' is not in"):
        pack.nodes.LoadDirections.execute(filename="absent.safetensors")


def test_select_scale_combine_resize_nodes(pack, sd15):
    d = random_dirs(pack, sd15)
    s = pack.nodes.SelectDirections.execute(directions=d, indices="random2, 0").args[0]
    assert s.names == ["random2", "random0"]
    sc = pack.nodes.ScaleDirections.execute(directions=s, factors="2, -1").args[0]
    assert torch.equal(sc.vectors[1], -s.vectors[1])
    st = pack.nodes.CombineDirections.execute(a=d, b=s, mode="stack", weight_a=1.0, weight_b=1.0).args[0]
    assert st.count == 5
    sm = pack.nodes.CombineDirections.execute(a=s, b=s, mode="sum", weight_a=1.0, weight_b=-1.0).args[0]
    assert not sm.vectors.any()
    bigger = {"samples": torch.zeros(1, 4, 24, 24)}
    r = pack.nodes.ResizeDirections.execute(directions=d, model=sd15, latent_image=bigger).args[0]
    assert r.h_shape == (64, 12, 12)


def test_sdxl_shaped_model_gets_its_own_h_shape(pack):
    sdxl = comfy_unet("sdxl")
    d = random_dirs(pack, sdxl, size=24)
    assert d.h_shape == (64, 12, 12)


def test_every_node_has_a_description_and_every_input_a_tooltip(pack):
    missing = []
    for node in pack.nodes.NODES:
        info = node.GET_NODE_INFO_V1()
        if len(info.get("description", "")) < 40:
            missing.append(f"{info['name']}: description")
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                if len(spec) < 2 or not spec[1].get("tooltip"):
                    missing.append(f"{info['name']}.{name}")
    assert not missing, missing


def test_the_pack_registers_its_model_folders(pack):
    """Direction files, Discovery states and Φ networks each get a models folder that takes
    safetensors only, and the shipped faces DDPM is listed among the diffusers folders."""
    from comfy_hspace.host import embedded

    for name in ("hspace_directions", "hspace_discovery", "hspace_avi"):
        paths, extensions = folder_paths.folder_names_and_paths[name]
        assert extensions == {".safetensors"}, name
        assert paths[0].endswith(name), paths
    assert str(embedded.FOLDER) in folder_paths.get_folder_paths("diffusers")
    assert "faces-ddpm" in pack.nodes.PixelDDPMLoader.define_schema().inputs[0].options


def test_null_conditioning_drives_the_stock_ksampler_on_a_pixel_ddpm(pack, tmp_path):
    """Null Conditioning is what an unconditional pixel DDPM samples with in a plain KSampler graph;
    on a class-conditional one it means the null class."""
    from tiny_models import save_pixel_ddpm

    import nodes as comfy_nodes
    from comfy_hspace.host.pixel_ddpm import load_pixel_ddpm

    null = pack.nodes.NullConditioning.execute().args[0]
    assert len(null) == 1 and null[0][1] == {}
    model, _ = load_pixel_ddpm(save_pixel_ddpm(tmp_path / "ddpm"))
    latent = {"samples": torch.zeros(2, 3, 16, 16)}
    out = comfy_nodes.common_ksampler(model, 0, 3, 1.0, "euler", "normal", null, null, latent)[0]["samples"]
    assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all() and out.std() > 0


def test_face_region_mask_covers_the_region_where_the_face_is(pack):
    """The mask follows the face: a face drawn at the left edge gets its mouth mask on the left,
    covering the mouth's pixels (where smiling and frowning faces differ) and little else."""
    from comfy_hspace import faces

    for x in (12.5, 19.5):
        settings = {"x": x, "y": 16.0, "size": 9.0, "glasses": 0}
        smiling = pack.nodes.FaceImages.execute(count=1, seed=3, factors=", ".join(
            f"{k}={v}" for k, v in {**settings, "smile": 1}.items())).args[0]
        frowning = pack.nodes.FaceImages.execute(count=1, seed=3, factors=", ".join(
            f"{k}={v}" for k, v in {**settings, "smile": 0}.items())).args[0]
        mask = pack.nodes.FaceRegionMask.execute(image=smiling, region="mouth").args[0]
        assert mask.shape == (1, faces.SIZE, faces.SIZE) and set(mask.unique().tolist()) == {0.0, 1.0}
        columns = mask[0].nonzero()[:, 1].float()
        assert abs(columns.mean().item() + 0.5 - x) < 1.5, (x, columns.mean())
        changed = (smiling - frowning).abs().amax(-1)[0] > 0.05
        assert changed.any() and (changed & (mask[0] > 0)).sum() >= 0.9 * changed.sum()
        assert mask.sum() < 0.2 * faces.SIZE ** 2
    with pytest.raises(ValueError, match="image: expected one image, got a batch of 2"):
        pack.nodes.FaceRegionMask.execute(image=torch.cat([smiling, smiling]), region="mouth")
