"""SoftCAM networks, their black-box counterparts and the backbone registry."""

from .backbones import (
    Backbone,
    BackboneSpec,
    available_backbones,
    build_backbone,
    check_spatial_dims,
    get_backbone_spec,
    register_backbone,
)
from .outputs import EVIDENCE_MAPS, LOGITS, EvidenceOutputs, probabilities, split_output, upsample_map, upsample_maps
from .pretrained import (
    PAPER_WEIGHTS,
    PretrainedWeightsError,
    checked_weight_file,
    load_pretrained_backbone,
    read_state_dict,
)
from .softcam import BlackBox, EvidenceHead, SoftCAM
from .vgg import VGG_CONFIGS, VGGFeatures, vgg_fc_block

__all__ = [
    "Backbone",
    "BackboneSpec",
    "BlackBox",
    "EVIDENCE_MAPS",
    "EvidenceHead",
    "LOGITS",
    "PAPER_WEIGHTS",
    "PretrainedWeightsError",
    "SoftCAM",
    "VGGFeatures",
    "VGG_CONFIGS",
    "available_backbones",
    "build_backbone",
    "check_spatial_dims",
    "get_backbone_spec",
    "checked_weight_file",
    "load_pretrained_backbone",
    "probabilities",
    "read_state_dict",
    "register_backbone",
    "split_output",
    "upsample_map",
    "upsample_maps",
    "EvidenceOutputs",
    "vgg_fc_block",
]
