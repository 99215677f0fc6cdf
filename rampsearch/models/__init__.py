"""Model families. Importing this registers their timm names (`inception_transformer_*`, `t2t_vit_t_*`)."""
from .inception_transformer import InceptionTransformer, build_iformer, checkpoint_filter_fn, set_fused_attn
from .t2t_vit import T2TViT, build_t2t_vit

__all__ = ["InceptionTransformer", "T2TViT", "build_iformer", "build_t2t_vit", "checkpoint_filter_fn",
           "set_fused_attn"]
