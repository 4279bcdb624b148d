from comfy_api.latest import io, ui

from comfy_hspace import classifier, faces
from comfy_hspace.host.model_info import image_scale
from comfy_hspace.host.report import clip_vision_features, direction_report, face_classifier_features, report_cost
from comfy_hspace.report import FEATURE_SPACES, calibrated, pixel_features, report_chart, report_json, report_text
from comfy_hspace.settings import MODES, EditSettings, SamplerSettings

from .common import CATEGORY, TIPS, Directions, parse_floats, sampler_inputs, send_progress_text

AUTO = "auto"


class DirectionReport(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HSpaceDirectionReport", display_name="Direction Report (h-space)", category=CATEGORY,
            description="Measures what each direction does on your own model: each direction alone is sampled at "
                        "every strength from the same noises (strength 0 is the stock sampler's output), decoded, "
                        "and judged in a feature space: effect (mean feature change per strength), consistency "
                        "(mean pairwise cosine of the samples' changes at the largest strength: 1 = the same "
                        "change on every sample), preservation (feature cosine to strength 0, and PSNR/SSIM in "
                        "pixels), monotonicity (Spearman along the mean change) and linearity (R² of a line "
                        "through it). Features: your CLIP vision model when connected; the face classifier on "
                        "the embedded model; otherwise weight-free pixel features. Costs one sampling run per "
                        "direction and non-zero strength, plus one.",
            inputs=[io.Model.Input("model", tooltip=TIPS["model"]),
                    io.Conditioning.Input("positive", tooltip=TIPS["positive"]),
                    io.Conditioning.Input("negative", tooltip=TIPS["negative"]),
                    io.Latent.Input("latent_image", tooltip="Image size (its batch is not used: see samples)."),
                    io.Vae.Input("vae", tooltip="Decodes the samples to images."),
                    Directions.Input("directions", tooltip="The directions to measure, each alone."),
                    *sampler_inputs("euler", "normal"),
                    io.Int.Input("samples", default=8, min=2, max=256,
                                 tooltip="Samples per strength (their seeds follow the seed)."),
                    io.String.Input("strengths", default="-2, -1, 0, 1, 2",
                                    tooltip="Strengths to sample each direction at; 0 is added if missing."),
                    io.Combo.Input("features", options=[AUTO, *FEATURE_SPACES], default=AUTO,
                                   tooltip="Where changes are measured. auto: CLIP vision when connected, the face "
                                           "classifier for the embedded model's 32 × 32 faces, else pixels."),
                    io.Combo.Input("mode", options=list(MODES), default=MODES[0],
                                   tooltip="As in the Edited Sampler; asymmetric for Discovery Trainer directions."),
                    io.Float.Input("calibrate_to", default=0.0, min=0.0, max=1e6, step=0.01,
                                   tooltip="Effect that strength 1 should have in the calibrated directions; 0: "
                                           "the median of the set."),
                    io.ClipVision.Input("clip_vision", optional=True,
                                        tooltip="Your CLIP vision model (CLIP Vision Loader), the feature space."),
                    io.Clip.Input("clip", optional=True,
                                  tooltip="The text encoder of the same CLIP, for CLIP directional similarity."),
                    io.String.Input("text_from", default="", optional=True,
                                    tooltip="With clip: the prompt the edit should move away from."),
                    io.String.Input("text_to", default="", optional=True,
                                    tooltip="With clip: the prompt the edit should move towards.")],
            outputs=[io.Image.Output("chart", tooltip="Effect against strength, and the other measures as bars."),
                     io.String.Output("table", tooltip="The table as JSON: one object per direction."),
                     Directions.Output("calibrated", tooltip="The directions rescaled so strength 1 has the same "
                                                             "measured effect (factors in their metadata).")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, vae, directions, seed, steps, cfg, sampler_name,
                scheduler, samples, strengths, features, calibrate_to, mode=MODES[0], clip_vision=None, clip=None,
                text_from="", text_to="") -> io.NodeOutput:
        sampling, edit = SamplerSettings(seed, steps, cfg, sampler_name, scheduler), EditSettings(mode=mode)
        values = parse_floats(strengths, "strengths")
        space = cls.feature_space(features, clip_vision, latent_image["samples"])
        size = tuple(side * image_scale(model) for side in latent_image["samples"].shape[-2:])  # the images'
        measure = {"clip vision": lambda: clip_vision_features(clip_vision, size),
                   "face classifier": lambda: face_classifier_features, "pixels": lambda: pixel_features}[space]()
        text = None
        if clip is not None and text_from.strip() and text_to.strip():
            if space != "clip vision":
                raise ValueError("clip: CLIP directional similarity needs the CLIP vision features; connect "
                                 "clip_vision")
            text = (clip, text_from, text_to)
        calls = report_cost(directions, values, samples, sampling, edit)
        node = cls.hidden.unique_id if cls.hidden is not None else None
        send_progress_text(f"{calls} model calls of {samples} samples each", node)
        found = direction_report(
            model, vae, directions, sampling, positive, negative, latent_image, samples=samples, strengths=values,
            features=measure, feature_names=list(classifier.NAMES) if space == "face classifier" else None,
            text=text, edit=edit,
            progress=lambda done, runs: send_progress_text(f"{calls} model calls: sampling run {done} of {runs}", node))
        table = report_text(found, space)
        return io.NodeOutput(report_chart(found, space), report_json(found, space),
                             calibrated(directions, found, calibrate_to), ui=ui.PreviewText(table))

    @staticmethod
    def feature_space(features: str, clip_vision, latent) -> str:
        if features == "clip vision" and clip_vision is None:
            raise ValueError("features: 'clip vision' needs a CLIP vision model; connect clip_vision (CLIP Vision "
                             "Loader)")
        if features != AUTO:
            return features
        if clip_vision is not None:
            return "clip vision"
        embedded_faces = latent.shape[1] == 3 and tuple(latent.shape[-2:]) == (faces.SIZE, faces.SIZE)
        return "face classifier" if embedded_faces else "pixels"
