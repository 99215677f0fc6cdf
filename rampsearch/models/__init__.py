"""Model families. Importing this registers the `inception_transformer_*` names with timm."""
from .inception_transformer import InceptionTransformer, build_iformer, set_fused_attn
from .t2t_vit import T2TViT, build_t2t_vit

__all__ = ["InceptionTransformer", "build_iformer", "set_fused_attn"]
