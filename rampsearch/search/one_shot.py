"""Where the one-shot method lived before rampsearch.search.methods: its names, for scripts that import them
from here (benchmarks/). New code imports rampsearch.search.methods.one_shot."""
from .methods.one_shot import (ALL_IMAGES, SUPERNET_DIR, Scored, Scorer, check_supernet, load_supernet, make_scorer,
                               recalibrate_batchnorm, score_candidate, supernet_config, train_supernet)

__all__ = ["ALL_IMAGES", "SUPERNET_DIR", "Scored", "Scorer", "check_supernet", "load_supernet", "make_scorer",
           "recalibrate_batchnorm", "score_candidate", "supernet_config", "train_supernet"]
