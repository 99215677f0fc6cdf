"""The train method: each candidate's score is a short proxy training of its own (`proxy:` in the space).

A candidate trains through `train.fit` in its trial folder (rampsearch.search.trial), on the training
data minus the search split, and is scored on that split; each epoch is reported, so the backends
prune it (or stop it, ASHA) like any training, and a retry resumes from its checkpoint. Before
retraining, the best searched schedules get `retrain.rescore_seeds` more proxy trainings each (seeds
search.seed + 1, ...; on the search split, in RUN_DIR/rescore/trial-NNNN/seedS/, resumable), ranked
by the mean over all seeds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ...errors import UserError
from ...model_spec import ModelSpec
from ..finalists import best_vs_runner_up
from ..options import SearchOptions
from ..record import TRAIN
from ..score import TOP1
from ..space import Candidate, RetrainSettings, SearchSpace
from ..trial import candidate_spec, run_trial, train_config, trial_folder
from .protocol import Finalist, Pool, Report, Words, model_of

RESCORE_DIR = "rescore"  # in the run directory


class ProxyTraining:
    name = TRAIN
    default_score = TOP1
    per_epoch = True
    words = Words(scored_by="proxy training", score_is="the proxy training's score in the search",
                  score_source="Proxy", scores="the search's proxy scores")

    def check_space(self, space: SearchSpace) -> None:
        """Every space can be searched by training its candidates."""

    def resolve(self, options: SearchOptions, run_dir: Path) -> SearchOptions:
        if options.supernet is not None:
            raise UserError(f"--supernet is for the one-shot method; this search uses method {options.method!r} "
                            "(add --method one-shot, or set method: one-shot in the space)")
        return options

    def preflight(self, space: SearchSpace, options: SearchOptions) -> None:
        from ...train import preflight

        preflight(train_config(space, candidate_spec(space, space.handset()), None, options.device))

    def plan(self, space: SearchSpace, trials: int) -> str:
        return f"{trials} trials of {space.proxy.epochs} proxy epochs"

    def epochs(self, space: SearchSpace) -> int:
        return space.proxy.epochs

    def prepare(self, space: SearchSpace, options: SearchOptions, run_dir: Path, show_progress: bool,
                log: Callable[[str], None]) -> None:
        """Nothing to prepare: every candidate trains on its own."""

    def evaluate(self, space: SearchSpace, candidate: Candidate, run_dir: Path, folder: int, options: SearchOptions,
                 report: Report | None) -> dict[str, Any]:
        config = train_config(space, candidate_spec(space, candidate), trial_folder(run_dir, folder), options.device,
                              keep_checkpoints=options.keep_checkpoints)
        return run_trial(config, report)

    def rescore(self, pool: Pool, space: SearchSpace, run_dir: Path, settings: RetrainSettings, supernet: str | None,
                device: str, log: Callable[[str], None]) -> tuple[list[Finalist], str | None]:
        """Each of `pool` with `settings.rescore_seeds` more proxy trainings, and how the best compares with the
        runner-up over the seeds they share (every trial of a search trains with search.seed, and each re-score
        seed is the same)."""
        seeds = settings.rescore_seeds
        if not seeds:
            how = "its search score (retrain.rescore_seeds: 0)"
            return [Finalist(t, r, (t.values[0],), how) for t, r in pool], None
        out, metric = [], space.score.metric
        for trial, record in pool:
            scores = [trial.values[0]]
            spec = ModelSpec.iformer(*model_of(record), space.img_size)
            for extra in range(1, seeds + 1):
                seed = space.search.seed + extra
                folder = run_dir / RESCORE_DIR / f"trial-{trial.number:04d}" / f"seed{seed}"
                log(f"re-scoring trial {trial.number} with proxy seed {seed}")
                scores.append(run_trial(train_config(space, spec, folder, device, seed=seed),
                                        report=lambda epoch, metrics: None)[metric])
            out.append(Finalist(trial, record, tuple(scores), f"one of the best {len(pool)} searched; mean "
                                                              f"{space.score.short} over {len(scores)} seeds"))
        return out, best_vs_runner_up(out, space, lambda f: f.scores, "seeds",  # the same paired t, over seeds
                                      "not distinguishable at this many seeds: the ranking between them is noise")


METHOD = ProxyTraining()
