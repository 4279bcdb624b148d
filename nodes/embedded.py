"""The embedded default: the procedural-faces DDPM, its label conditioning and its classifier."""
import torch
from comfy_api.latest import io

from comfy_hspace import classifier, faces
from comfy_hspace.host import embedded

from .common import CATEGORY, TIPS

Scores = io.Custom("HSPACE_SCORES")


class EmbeddedFacesModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceEmbeddedFacesModel", display_name="Embedded Faces Model (h-space)", category=CATEGORY,
            description=f"The pack's own {faces.SIZE}×{faces.SIZE} pixel-space models of procedural faces (known "
                        f"factors: position, size, skin and background hue, smile, eyes, glasses, hair): a UNet "
                        f"DDPM (h = its bottleneck) or a transformer trained by flow matching like SD3 (h = the image "
                        f"tokens after a joint block). Label-conditional: use Face Labels for positive/negative. "
                        f"Empty latents: EmptyChromaRadianceLatentImage at {faces.SIZE}×{faces.SIZE}.",
            inputs=[io.Combo.Input("architecture", options=list(embedded.ARCHITECTURES), default="unet", optional=True,
                                   tooltip="unet: the DDPM (ε-prediction; sample with ddpm/DDIM). dit: the "
                                           "transformer, SD3's classes (flow; sample with euler).")],
            outputs=[io.Model.Output(), io.Vae.Output()],
        )

    @classmethod
    def execute(cls, architecture="unet") -> io.NodeOutput:
        if architecture not in embedded.ARCHITECTURES:
            raise ValueError(f"architecture: expected one of {list(embedded.ARCHITECTURES)}, got {architecture!r}")
        return io.NodeOutput(*embedded.load_model(embedded.ARCHITECTURES[architecture]))


class FaceLabels(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceFaceLabels", display_name="Face Labels (h-space)", category=CATEGORY,
            description="CONDITIONING for the embedded faces model from attribute labels.",
            inputs=[io.String.Input("labels", default="smile",
                                    tooltip=f"Comma-separated labels that are on, from {list(faces.LABELS)}; the "
                                            f"others are off. 'null' gives the unconditional label (use it as "
                                            f"the negative with cfg > 1).")],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    def execute(cls, labels) -> io.NodeOutput:
        return io.NodeOutput(embedded.conditioning(labels))


class FaceScores(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceFaceScores", display_name="Face Attribute Scores (h-space)", category=CATEGORY,
            description="The embedded attribute classifier: per image, the probability of each binary factor "
                        f"{list(faces.BINARY)} and the value of each continuous one {list(faces.CONTINUOUS)}.",
            inputs=[io.Image.Input("images", tooltip=f"{faces.SIZE}×{faces.SIZE} RGB images.")],
            outputs=[Scores.Output("scores"), io.String.Output("table")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images) -> io.NodeOutput:
        values = embedded.score(images)
        header = "  ".join(f"{n:>9}" for n in classifier.NAMES)
        rows = ["  ".join(f"{v:9.3f}" for v in row.tolist()) for row in values]
        table = "\n".join([header, *rows])
        return io.NodeOutput({"names": list(classifier.NAMES), "values": values}, table, ui={"text": [table]})


class FaceRegionMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceFaceRegionMask", display_name="Face Region Mask (h-space)", category=CATEGORY,
            description="A MASK around the mouth, the eyes or the whole face of an embedded-domain image, placed "
                        "where the classifier sees the face: the region of interest for Jacobian Directions.",
            inputs=[io.Image.Input("image", tooltip=f"One {faces.SIZE}×{faces.SIZE} image of the embedded domain."),
                    io.Combo.Input("region", options=list(faces.REGIONS), default="mouth",
                                   tooltip="Which part of the face the mask covers.")],
            outputs=[io.Mask.Output()],
        )

    @classmethod
    def execute(cls, image, region) -> io.NodeOutput:
        if image.dim() != 4 or tuple(image.shape[1:]) != (faces.SIZE, faces.SIZE, 3):
            raise ValueError(f"image: expected one {faces.SIZE}×{faces.SIZE} RGB image [1, {faces.SIZE}, {faces.SIZE}, "
                             f"3], got shape {list(image.shape)}")
        if image.shape[0] != 1:
            raise ValueError(f"image: expected one image, got a batch of {image.shape[0]}")
        scores = dict(zip(classifier.NAMES, embedded.score(image)[0].tolist()))
        if not embedded.face_found(image)[0]:
            raise ValueError("image: no face found (the face drawn from the classifier's reading does not match "
                             "the image); the mask needs an image of the embedded domain")
        mask = faces.region_mask(region, scores["x"], scores["y"], scores["size"])
        return io.NodeOutput(torch.from_numpy(mask)[None])


class FaceImages(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceFaceImages", display_name="Face Images (h-space)", category=CATEGORY,
            description="Real images of the embedded domain, drawn by the procedural generator (not the DDPM): "
                        "random factors except those set. The same seed with different settings gives the same "
                        "faces apart from the set factors, e.g. labelled pairs for Attribute Direction.",
            inputs=[io.Int.Input("count", default=8, min=1, max=4096,
                                 tooltip="Number of faces."),
                    io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                                 tooltip=TIPS["seed"]),
                    io.String.Input("factors", default="smile=1",
                                    tooltip=f"Comma-separated name=value from {list(faces.BINARY + faces.CONTINUOUS)}"
                                            f"; binary factors take 0 or 1.")],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, count, seed, factors) -> io.NodeOutput:
        images, _ = faces.images_with(count, seed % 2 ** 32, faces.parse_settings(factors))
        return io.NodeOutput(embedded.to_image(images))
