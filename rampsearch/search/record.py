"""What a search trial stores, in one typed place: `TrialRecord`.

A trial's record lives in its Optuna user attributes, one attribute per field, under the field's
name, so any Optuna client (optuna-dashboard, `study.trials_dataframe()`) shows it as it is. Only
this module turns attributes into fields and back: write with `record.write(trial)` (or
`record.save(setter)` with any `(key, value)` setter, e.g. a storage write for a trial of a dead
process; `record.attrs()` for a trial still to be enqueued), read with `TrialRecord.of(trial)` (a
frozen or a running trial). Writing sets the fields that differ from their defaults, so a partial
record updates just those: `TrialRecord(status=PRUNED, reason=...).write(trial)`.

`status` says why a trial is in its Optuna state, which the state alone cannot: an over-budget
candidate and a pruned one are both PRUNED; a failed trial and an interrupted one are both FAIL.
`reason` is the same in words, for people.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

from optuna.trial import FrozenTrial

SetAttr = Callable[[str, Any], None]

OVER_BUDGET = "over_budget"  # rejected before training (PRUNED in Optuna)
# The same candidate as an earlier trial, never trained: answered with that trial's score (COMPLETE, so the
# sampler learns from it) when it has one, else rejected (PRUNED). Never counted towards --trials.
DUPLICATE = "duplicate"
PRUNED = "pruned"  # stopped early by a pruner or ASHA (PRUNED)
FAILED = "failed"  # the training raised (FAIL)
INTERRUPTED = "interrupted"  # Ctrl-C, a killed process or a lost node (FAIL); retried on the next run
STATUSES = (OVER_BUDGET, DUPLICATE, PRUNED, FAILED, INTERRUPTED)

# What a trial's history keeps of each epoch (the standard errors over images from rampsearch 0.2 on).
HISTORY_METRICS = ("top1", "top5", "loss", "train_loss", "loss_se", "top1_se")
# How a trial's value was measured (the space's `method`): a short standalone training, or on a supernet.
TRAIN, ONE_SHOT = "train", "one-shot"
DEFAULT_METHOD = TRAIN  # a space without `method:`; a trial recorded before methods existed


class HasAttrs(Protocol):
    """A trial whose user attributes can be read and set: optuna.Trial (Ray's OptunaSearch's too)."""

    @property
    def user_attrs(self) -> dict[str, Any]: ...

    def set_user_attr(self, key: str, value: Any) -> None: ...


@dataclass(frozen=True)
class TrialRecord:
    """Everything rampsearch stores on a trial besides Optuna's own params, values and state."""

    architecture: dict[str, Any] | None = None  # Architecture.to_dict()
    ramp: tuple[float, ...] | None = None  # per-block C_h/C
    flops: int | None = None  # closed-form fvcore FLOPs at the space's img_size, 1000-class head
    params: int | None = None
    handset: bool = False  # the space's base architecture with its hand-set ramp: the yardstick
    status: str | None = None  # one of STATUSES, or None for a trial that trained to the end
    reason: str | None = None  # the status in words ("gflops over budget by 0.001", "MemoryError: ...")
    seed: int | None = None  # training seed
    method: str = DEFAULT_METHOD
    history: tuple[dict[str, float], ...] = ()  # per-epoch metrics, epoch 1 first
    retry_of: int | None = None  # number of the interrupted trial this one retries
    folder: int | None = None  # trials/NNNN the training writes to (a retry reuses its original's)
    worker: dict[str, Any] | None = None  # {"host", "pid"} of the process that ran it
    sampler_seed: int | None = None  # the seed of the sampler that proposed it (each process has its own)
    duration_s: float | None = None  # training wall time, resumed sessions included
    score_se: float | None = None  # the standard error over images of the trial's value (the searched score)
    repeat_of: int | None = None  # a duplicate: the earlier trial with the same candidate (whose score it has)
    ray_trial_id: str | None = None

    def save(self, set_attr: SetAttr) -> None:
        """Write every field not at its default through `set_attr` (a partial record updates only its fields)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != f.default:  # every field's default is a plain value (history's is the empty tuple)
                set_attr(f.name, _to_json(value))

    def write(self, trial: HasAttrs) -> None:
        """Write this record's fields on a running trial."""
        self.save(trial.set_user_attr)

    def attrs(self) -> dict[str, Any]:
        """This record's fields as user attributes (for `study.enqueue_trial(..., user_attrs=...)`)."""
        out: dict[str, Any] = {}
        self.save(out.__setitem__)
        return out

    @classmethod
    def of(cls, trial: FrozenTrial | HasAttrs) -> "TrialRecord":
        return cls.from_attrs(trial.user_attrs)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> "TrialRecord":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {**_legacy(attrs), **{k: v for k, v in attrs.items() if k in known}}
        if values.get("ramp") is not None:
            values["ramp"] = tuple(values["ramp"])
        values["history"] = tuple(values.get("history", ()))
        return cls(**values)

    @classmethod
    def duplicate(cls, earlier: int, answered: bool) -> "TrialRecord":
        """The record of a candidate that trial `earlier` trained (or trains) already; `answered`: with
        that trial's score (else rejected: it has none yet, or was pruned or failed)."""
        how = "answered with its score" if answered else "rejected (it has no score to give)"
        return cls(status=DUPLICATE, repeat_of=earlier,
                   reason=f"the same candidate as trial {earlier}; {how}, never trained")

    def with_epoch(self, epoch: int, metrics: Mapping[str, float]) -> "TrialRecord":
        """This record with one more epoch in its history, its HISTORY_METRICS taken from `metrics`
        (an epoch seen before replaces its row)."""
        rows = [row for row in self.history if row["epoch"] != epoch]
        kept = {k: metrics[k] for k in HISTORY_METRICS if k in metrics}
        return dataclasses.replace(self, history=tuple(rows) + ({"epoch": epoch, **kept},))

    @property
    def candidate(self) -> "CandidateKey | None":
        """What makes this trial's candidate the same as another's: its architecture and ramp as built."""
        if self.architecture is None or self.ramp is None:
            return None
        return candidate_key(self.architecture, self.ramp)

    @property
    def over_budget(self) -> bool:
        return self.status == OVER_BUDGET

    @property
    def interrupted(self) -> bool:
        return self.status == INTERRUPTED

    @property
    def rejected(self) -> bool:
        """Never trained and never counted: over budget, or a duplicate (answered or not)."""
        return self.status in (OVER_BUDGET, DUPLICATE)


CandidateKey = tuple[str, tuple[float, ...]]


def candidate_key(architecture: Mapping[str, Any], ramp: tuple[float, ...] | list[float]) -> CandidateKey:
    """A hashable identity of a candidate: different sampler numbers can snap to the same ramp."""
    return json.dumps(dict(architecture), sort_keys=True), tuple(ramp)


def optuna_retry_of(trial: FrozenTrial) -> int | None:
    """The trial that Optuna's own RetryHeartbeatStaleTrialCallback enqueued `trial` to retry, as in
    studies of rampsearch 0.1 (a system attribute; Optuna's accessor for it is experimental and warns)."""
    return trial.system_attrs.get("failed_trial")


def _legacy(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Fields of a trial written before this record existed (rampsearch 0.1 studies keep resuming)."""
    out: dict[str, Any] = {}
    if "baseline" in attrs:  # the hand-set ramp's trial was flagged `baseline`
        out["handset"] = bool(attrs["baseline"])
    if attrs.get("infeasible"):
        out["status"] = OVER_BUDGET
    elif "error" in attrs:
        out["status"] = INTERRUPTED if str(attrs["error"]).startswith("interrupted") else FAILED
    reason = attrs.get("error") or attrs.get("reason")
    if reason is not None:
        out["reason"] = reason
    return out


def _to_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


__all__ = ["CandidateKey", "candidate_key", "DEFAULT_METHOD", "DUPLICATE", "FAILED", "HISTORY_METRICS", "INTERRUPTED", "OVER_BUDGET", "ONE_SHOT", "PRUNED", "TRAIN",
           "STATUSES", "TrialRecord", "optuna_retry_of"]
