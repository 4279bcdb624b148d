"""The embedded default: the procedural faces, the shipped DDPM, DiT and classifier, their nodes,
and smoke runs of the scripts that made them."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from comfy_env import REPO

from comfy_hspace import classifier as C
from comfy_hspace import faces
from comfy_hspace.host import embedded, pixel_dit
from comfy_hspace.host.pixel_ddpm import CLASS_KEY, load_pixel_ddpm


def test_faces_are_seeded_and_labelled():
    a, fa = faces.dataset(16, seed=3)
    b, fb = faces.dataset(16, seed=3)
    assert np.array_equal(a, b) and a.shape == (16, 3, faces.SIZE, faces.SIZE)
    assert -1.0 <= a.min() and a.max() <= 1.0
    c, _ = faces.dataset(16, seed=4)
    assert not np.array_equal(a, c)
    one = dict((k, v[:1].copy()) for k, v in fa.items())
    smiling, frowning = dict(one, smile=np.array([True])), dict(one, smile=np.array([False]))
    diff = np.abs(faces.render(smiling) - faces.render(frowning))[0].sum(0)
    rows = np.nonzero(diff.sum(1))[0]
    assert diff.sum() > 0 and rows.min() > fa["y"][0]  # the mouth is a local change below the face centre


def test_glasses_are_correlated_with_dark_hair():
    _, f = faces.dataset(4000, seed=0)
    dark, blond = f["glasses"][~f["blond"]].mean(), f["glasses"][f["blond"]].mean()
    assert dark - blond > 0.3


def test_label_parsing():
    assert faces.parse_labels("smile") == 1
    assert faces.parse_labels("glasses, blond") == 6
    assert faces.parse_labels("") == 0
    assert faces.parse_labels("null") == faces.NULL_CLASS
    with pytest.raises(ValueError, match=r"labels: unknown label\(s\) \['hat'\]"):
        faces.parse_labels("smile, hat")


def test_classifier_reads_fresh_faces():
    model, metrics = C.load_classifier()
    images, f = faces.dataset(256, seed=999)
    scores = C.score_images(model, torch.from_numpy((images.transpose(0, 2, 3, 1) + 1) / 2))
    for j, k in enumerate(faces.BINARY):
        assert ((scores[:, j] > 0.5).numpy() == f[k]).mean() >= 0.95, k
    for j, k in enumerate(faces.CONTINUOUS, start=len(faces.BINARY)):
        r2 = 1 - ((scores[:, j].numpy() - f[k]) ** 2).mean() / f[k].var()
        assert r2 >= 0.9, k


def test_classifier_refuses_wrong_images():
    model, _ = C.load_classifier()
    with pytest.raises(ValueError, match=r"images: expected a batch of 32×32 RGB images .* got shape \[2, 64, 64, 3\]"):
        C.score_images(model, torch.zeros(2, 64, 64, 3))
    with pytest.raises(ValueError, match=r"got shape \[2, 32, 32, 4\]"):
        C.score_images(model, torch.zeros(2, 32, 32, 4))


@pytest.mark.parametrize("architecture,sampler", [("unet", "ddpm"), ("dit", "euler")])
def test_shipped_models_follow_labels_through_comfyui(architecture, sampler):
    """A small version of scripts/measure_embedded.py: with cfg 2 the samples obey the smile label."""
    import comfy.sample

    model, vae = embedded.load_model(embedded.ARCHITECTURES[architecture])
    negative = embedded.conditioning("null")
    found = {}
    for labels in ("smile", ""):
        latent = torch.zeros(8, 3, faces.SIZE, faces.SIZE)
        positive = embedded.conditioning(labels)
        x = comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 5), 20, 2.0, sampler, "normal",
                                positive, negative, latent, seed=5, disable_pbar=True)
        found[labels] = (embedded.score(vae.decode(x))[:, C.NAMES.index("smile")] > 0.5).float().mean().item()
    assert found["smile"] >= 0.75 and found[""] <= 0.25


def test_label_nodes(pack):
    cond = pack.nodes.FaceLabels.execute(labels="smile, blond").args[0]
    assert cond[0][1][CLASS_KEY] == 5
    with pytest.raises(ValueError, match="unknown label"):
        pack.nodes.FaceLabels.execute(labels="beard")
    images = torch.from_numpy((faces.dataset(4, seed=1)[0].transpose(0, 2, 3, 1) + 1) / 2)
    out = pack.nodes.FaceScores.execute(images=images).args
    assert out[0]["values"].shape == (4, len(C.NAMES)) and out[1].splitlines()[0].split()[0] == "smile"


@pytest.mark.parametrize("script,args", [
    ("train_ddpm.py", ["--steps", "2", "--images", "64", "--batch", "8", "--state", "STATE"]),
    ("train_dit.py", ["--steps", "2", "--images", "64", "--batch", "8", "--state", "STATE"]),
    ("train_dit.py", ["--architecture", "patch-2-narrow", "--steps", "2", "--images", "64", "--batch", "8",
                      "--state", "STATE"]),
    ("train_classifier.py", ["--images", "256", "--epochs", "1", "--batch", "32"]),
])
def test_training_scripts_run_a_few_steps(tmp_path, script, args):
    out = tmp_path / "out"
    args = [str(tmp_path / "state.safetensors") if a == "STATE" else a for a in args]
    r = subprocess.run([sys.executable, str(REPO / "scripts" / script), *args, "--out",
                        str(out if script == "train_ddpm.py" else out / "c.safetensors")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    if script == "train_ddpm.py":
        model, _ = load_pixel_ddpm(out)  # what the script writes is what the loader reads
        assert model.get_model_object("diffusion_model").unet.config.num_class_embeds == faces.NULL_CLASS + 1
    elif "patch-2-narrow" in args:  # issue 33's candidate: not loadable as the embedded DiT until it is shipped
        from comfy_hspace.files import read_safetensors

        tensors, meta = read_safetensors(out / "c.safetensors", "model", pixel_dit.FORMAT, "an embedded DiT")
        assert json.loads(meta["config"])["patch_size"] == 2 and len({k for k in tensors if "joint_blocks." in k
                                                                        and k.endswith("attn.qkv.weight")}) == 16
    elif script == "train_dit.py":
        model, _ = embedded.load_model(out / "c.safetensors")
        assert type(model.get_model_object("diffusion_model")).__name__ == "OpenAISignatureMMDITWrapper"
    else:
        C.load_classifier(out / "c.safetensors")


def test_ddpm_training_resumes_where_it_was_saved_and_refuses_bad_states(tmp_path):
    """A run in two chunks (the first stopped by its time limit) ends with the weights of one
    uninterrupted run; a truncated state or one of another run is refused, naming the file."""
    from safetensors.torch import load_file

    def train(state, out, *extra):
        return subprocess.run([sys.executable, str(REPO / "scripts" / "train_ddpm.py"), "--steps", "4", "--images",
                               "64", "--batch", "4", "--warmup", "2", "--save-every", "10", "--state", str(state),
                               "--out", str(out), *extra], capture_output=True, text=True, timeout=600)

    chunked, straight = tmp_path / "chunked.safetensors", tmp_path / "straight.safetensors"
    first = train(chunked, tmp_path / "a", "--max-minutes", "0")  # saves after its first step and stops
    assert first.returncode == 0 and "stopped at step 1 of 4" in first.stdout, first.stderr[-2000:]
    second = train(chunked, tmp_path / "a")
    assert second.returncode == 0 and "resumed" in second.stdout and "stopped at step 4 of 4" in second.stdout
    assert train(straight, tmp_path / "b").returncode == 0
    weights = "unet/diffusion_pytorch_model.safetensors"
    a, b = load_file(str(tmp_path / "a" / weights)), load_file(str(tmp_path / "b" / weights))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list(tmp_path.glob("*.partial"))

    other = train(chunked, tmp_path / "a", "--lr", "1e-3")
    assert other.returncode != 0 and f"--state: {chunked} was trained with other settings" in other.stderr
    chunked.write_bytes(chunked.read_bytes()[:5000])
    truncated = train(chunked, tmp_path / "a")
    assert truncated.returncode != 0 and f"--state {chunked}: not a readable safetensors file" in truncated.stderr
    from comfy_hspace.files import write_safetensors

    foreign = tmp_path / "foreign.safetensors"  # a state of a wider UNet
    write_safetensors(foreign, {"model.x": torch.zeros(1)}, {
        "format": "comfy-hspace/ddpm-training/1", "step": "1", "recipe": "{}",
        "unet_config": json.dumps({"block_out_channels": [64, 128, 192]})})
    wider = train(foreign, tmp_path / "a")
    assert wider.returncode != 0 and f"--state: {foreign} was trained with another architecture" in wider.stderr


def test_face_found_tells_faces_from_faceless_images():
    """The faceless-sample test of scripts/measure_embedded.py: every real face passes; plain
    backgrounds, noise, and faces painted over with their own background fail."""
    images, factors = faces.dataset(64, seed=11)
    real = embedded.to_image(images)
    assert embedded.face_found(real).all()
    backgrounds = torch.stack([torch.from_numpy(faces.background_rgb(float(h))).expand(32, 32, 3)
                               for h in factors["bg_hue"][:16]]).float()
    assert not embedded.face_found(backgrounds).any()
    assert embedded.face_found(torch.rand(16, 32, 32, 3, generator=torch.Generator().manual_seed(0))).sum() <= 1
    erased = real[:16].clone()
    for i in range(16):
        disk = torch.from_numpy(faces.region_mask("face", factors["x"][i], factors["y"][i], 1.3 * factors["size"][i]))
        erased[i][disk > 0] = torch.from_numpy(faces.background_rgb(float(factors["bg_hue"][i])))
    assert not embedded.face_found(erased).any()


def test_dit_files_of_another_patch_size_or_label_set_or_truncated_are_refused(tmp_path):
    from comfy_hspace.files import write_safetensors
    from comfy_hspace.host import pixel_dit

    dm = pixel_dit.build_dit().diffusion_model
    pixel_dit.init_weights(dm)
    good = tmp_path / "good.safetensors"
    pixel_dit.save_dit(dm, good, {})
    embedded.load_model(good)
    tensors = {k: v.contiguous() for k, v in dm.state_dict().items()}
    labels, config = json.dumps(list(faces.LABELS)), json.dumps(pixel_dit.DIT_CONFIG)
    for name, labels, config, message in [
            ("patch2", labels, json.dumps(dict(pixel_dit.DIT_CONFIG, patch_size=2)),
             r"another architecture than the embedded DiT's .*'patch_size': \(2, 4\)"),
            ("hats", json.dumps(["smile", "hat"]), config, r"trained on the labels \['smile', 'hat'\]")]:
        path = tmp_path / f"{name}.safetensors"
        write_safetensors(path, tensors, {"format": pixel_dit.FORMAT, "labels": labels, "config": config})
        with pytest.raises(ValueError, match=f"model {path}: " + message):
            embedded.load_model(path)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:100_000])
    with pytest.raises(ValueError, match=f"model {truncated}: not a readable safetensors file"):
        embedded.load_model(truncated)


def test_dit_label_tokens_give_each_label_its_state():
    from comfy_hspace.host.pixel_dit import LABEL_WIDTH, label_tokens

    tokens = label_tokens(torch.tensor([faces.parse_labels("smile, blond"), faces.NULL_CLASS]))
    assert tokens.shape == (2, len(faces.LABELS), LABEL_WIDTH) and (tokens.sum(-1) == 1).all()
    on = {faces.LABELS[i]: int(tokens[0, i].argmax()) % 3 for i in range(len(faces.LABELS))}
    assert on == {"smile": 1, "glasses": 0, "blond": 1}
    assert (tokens[1].argmax(-1) % 3 == 2).all()  # unconditional: every label token says "unknown"


def test_the_shipped_dit_reads_h_at_the_block_its_study_chose():
    from comfy_hspace.host.architectures import BLOCK_OPTION, site_of
    from comfy_hspace.host.pixel_dit import DEFAULT_BLOCK

    model, _ = embedded.load_model(embedded.DIT_FILE)
    assert str(site_of(model)) == f"SD3 block {DEFAULT_BLOCK} (double-block {DEFAULT_BLOCK})" and DEFAULT_BLOCK == 5
    assert site_of(model).h_shape((1, 3, faces.SIZE, faces.SIZE)) == (128, 8, 8)  # the UNet's 8 × 8 grid
    elsewhere = model.clone()
    elsewhere.model_options[BLOCK_OPTION] = 2  # H-space Block still moves it
    assert str(site_of(elsewhere)) == "SD3 block 2 (double-block 2)"


def test_a_face_region_mask_goes_into_jacobian_directions_on_the_embedded_dit(pack):
    """The DiT works in pixels (image scale 1), so the 32 × 32 mouth mask of a face fits its latent; an edit by
    the masked Jacobian's top direction changes the sample inside the mouth (measured: 99% of the squared
    change), the whole image's top direction elsewhere (2%)."""
    import nodes as comfy_nodes  # ComfyUI's nodes.py (the stock sampler)

    model, _ = embedded.load_model(embedded.DIT_FILE)
    image = pack.nodes.FaceImages.execute(count=1, seed=0, factors="smile=1").args[0]
    mask = pack.nodes.FaceRegionMask.execute(image=image, region="mouth").args[0]
    assert 0 < float(mask.mean()) < 0.25
    null, latent = embedded.conditioning("null"), {"samples": torch.zeros(1, 3, faces.SIZE, faces.SIZE)}

    def jacobian(**kw):
        return pack.nodes.JacobianDirections.execute(
            model=model, positive=null, negative=null, latent_image=latent, seed=0, steps=8, cfg=1.0,
            sampler_name="euler", scheduler="simple", step=3, each_step=False, n_directions=1, batch_size=1,
            tolerance=1e-3, max_iterations=15, scale_by_singular_value=False, **kw).args[0]

    def sample(m):
        return comfy_nodes.common_ksampler(m, 0, 8, 1.0, "euler", "simple", null, null, latent)[0]["samples"]

    with torch.inference_mode():
        masked, whole = jacobian(mask=mask), jacobian()
        plain = sample(model)
        inside = []
        for d in (masked, whole):
            edited = pack.nodes.ApplyHSpaceEdit.execute(model=model, directions=d, strengths="0.5", start_percent=0.0,
                                                        end_percent=1.0, apply_to="both").args[0]
            change = (sample(edited) - plain).pow(2).sum(1)[0]
            inside.append(float((change * mask[0]).sum() / change.sum()))
    assert masked.parameters["masked"] and masked.h_shape == whole.h_shape == (128, 8, 8)
    assert inside[0] > 0.8 and inside[1] < 0.3, inside
