"""MetaQAP no-reference image quality assessment as a transformers model.

`import metaqap_hf` registers the model with `AutoConfig`, `AutoModel`, `AutoImageProcessor` and the
`pipeline("image-quality")` task. Where each step of scoring lives:

    image file / bytes / URL / PIL / array / tensor
      -> image_utils                                      (decode, orientation, RGB; then the processor's resize
                                                           to 512x512 and rescale to [0, 1]: pixel_values)
      -> modeling_metaqap.MetaQAPModel                    (per-backbone resize + normalisation -> backbones
                                                           -> pooled features -> heads -> meta-learner -> score)
      -> pipeline_image_quality.ImageQualityPipeline      (batching, devices, plain-Python results)
      -> scoring.ImageScorer                              (many files: folders, skipped files with reasons)
      -> the `metaqap` command (package metaqap_cli)      (arguments only)

`QualityLoss` (quality_loss.py) runs the same path differentiably, as a loss for restoration models.

Training, data, evaluation and hub code are imported only when used (`metaqap_hf.training`, `.data`, ...).
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_metaqap import LITE_BACKBONES, MetaQAPConfig
from .default_model import DEFAULT_MODEL_NAME, DEFAULT_MODEL_PATH
from .image_processing_metaqap import MetaQAPImageProcessor, MetaQAPImageProcessorPil
from .image_utils import ImageLoadError, load_image
from .modeling_metaqap import ImageQualityOutput, MetaQAPModel, MetaQAPPreTrainedModel
from .pipeline_image_quality import ImageQualityPipeline
from .quality_loss import QualityLoss
from .remote_code import export_remote_code
from .version import __version__


__all__ = [
    "DEFAULT_MODEL_NAME",
    "DEFAULT_MODEL_PATH",
    "ImageLoadError",
    "ImageQualityOutput",
    "ImageQualityPipeline",
    "LITE_BACKBONES",
    "MetaQAPConfig",
    "MetaQAPImageProcessor",
    "MetaQAPImageProcessorPil",
    "MetaQAPModel",
    "MetaQAPPreTrainedModel",
    "QualityLoss",
    "export_remote_code",
    "load_image",
]

AutoConfig.register(MetaQAPConfig.model_type, MetaQAPConfig, exist_ok=True)
AutoModel.register(MetaQAPConfig, MetaQAPModel, exist_ok=True)
AutoImageProcessor.register(
    MetaQAPConfig,
    image_processor_classes={"torchvision": MetaQAPImageProcessor, "pil": MetaQAPImageProcessorPil},
    exist_ok=True,
)
PIPELINE_REGISTRY.register_pipeline(
    "image-quality",
    pipeline_class=ImageQualityPipeline,
    pt_model=AutoModel,
    default={"model": (str(DEFAULT_MODEL_PATH), None)},
    type="image",
)
