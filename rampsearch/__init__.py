"""rampsearch: search the Inception Transformer's frequency ramp under a FLOPs budget."""
from .architecture import VARIANTS, Architecture, ArchitectureError
from .flops import FlopsModel, count_flops, estimate_flops, flop_report
from .models import InceptionTransformer, build_iformer, set_fused_attn
from .ramp import ContinuousRamp, RampError, RampSchedule, load_ramp, paper_style_high_heads

__all__ = [
    "VARIANTS", "Architecture", "ArchitectureError", "ContinuousRamp", "FlopsModel", "InceptionTransformer",
    "RampError", "RampSchedule", "build_iformer", "count_flops", "estimate_flops", "flop_report", "load_ramp",
    "paper_style_high_heads", "set_fused_attn",
]
