from .activation_files import LoadActivations, MergeActivations, SaveActivations
from .attribute_direction import AttributeDirection, Disentangle
from .avi import AVILatentMerge, AVITrainer, LatentSingularValues, LoadAVIPhi
from .direction_report import DirectionReport
from .directions_nodes import (
    CombineDirections,
    LoadDirections,
    RandomDirections,
    ResizeDirections,
    SaveDirections,
    ScaleDirections,
    SelectDirections,
)
from .discovery_trainer import DiscoveryTrainer
from .edited_sampler import ApplyHSpaceEdit, DirectionSweepGrid, EditedSampler
from .embedded import EmbeddedFacesModel, FaceImages, FaceLabels, FaceRegionMask, FaceScores
from .hspace_block import HSpaceBlock
from .hspace_hook import HSpaceHook
from .invert_image import InvertImage
from .jacobian_directions import JacobianDirections
from .pca_directions import PCADirections
from .pixel_ddpm import NullConditioning, PixelDDPMLoader

NODES = [EditedSampler, ApplyHSpaceEdit, DirectionSweepGrid, SaveDirections, LoadDirections, RandomDirections,
         SelectDirections, ScaleDirections, CombineDirections, ResizeDirections, PixelDDPMLoader, NullConditioning,
         EmbeddedFacesModel, FaceLabels, FaceScores, FaceRegionMask, FaceImages, HSpaceHook,
         PCADirections, JacobianDirections, AttributeDirection, Disentangle, InvertImage,
         DiscoveryTrainer, AVILatentMerge, AVITrainer, LoadAVIPhi, LatentSingularValues, HSpaceBlock,
         DirectionReport, SaveActivations, LoadActivations, MergeActivations]
