"""The search's seams: the trial record, the study layer, redaction, and who may import whom."""
from __future__ import annotations

import ast
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from rampsearch.redact import redact, redact_command
from rampsearch.search.record import INTERRUPTED, OVER_BUDGET, TrialRecord
from rampsearch.search.rdb import check_storage_url
from rampsearch.search.study import (counted_trials, fail_trial, open_storage,
                                     retry_interrupted, trial_by_number)
from rampsearch.errors import UserError
from rampsearch.ramp import RampSchedule
from rampsearch.search.load import load_space

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rampsearch"


def _imports(path: Path) -> set[str]:
    """Modules a file imports, relative imports resolved against the rampsearch package."""
    tree, found = ast.parse(path.read_text()), set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, (base, node.module)))
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names}
    return found


def _files(module: str) -> list[Path]:
    """The source files of a module: its file, or every file of its package."""
    path = ROOT / module.replace(".", "/")
    return sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


def test_backends_import_nothing_from_each_other():
    backends = {"rampsearch.search.optuna_backend", "rampsearch.search.ray_backend"}
    for backend in backends:
        for path in _files(backend):
            assert not {m for m in _imports(path) for other in backends - {backend}
                        if m == other or m.startswith(other + ".")}, f"{path} imports another backend"


def test_retrain_and_report_use_the_study_layer_not_a_backend():
    users = [PACKAGE / "retrain.py", *sorted((PACKAGE / "report").rglob("*.py"))]
    for path in users:
        assert not {m for m in _imports(path) if "_backend" in m}, f"{path.name} imports a backend"


def test_nothing_reads_user_attrs_by_string_outside_the_record():
    for path in PACKAGE.rglob("*.py"):
        if path.name == "record.py":
            continue
        text = path.read_text()
        assert "user_attrs[" not in text and "user_attrs.get(" not in text, path


def test_record_round_trips_through_a_trial():
    study = optuna.create_study()
    trial = study.ask()
    record = TrialRecord(architecture={"depths": [1, 1, 2, 1]}, ramp=(0.5, 0.25), flops=10, params=3, handset=True,
                         seed=0, folder=7, worker={"host": "h", "pid": 1})
    record = record.with_epoch(1, {"top1": 10.0}).with_epoch(2, {"top1": 20.0}).with_epoch(2, {"top1": 21.0})
    record.save(trial.set_user_attr)
    study.tell(trial, 1.0)
    back = TrialRecord.of(study.trials[0])
    assert back == record and [row["epoch"] for row in back.history] == [1, 2]
    assert back.history[-1]["top1"] == 21.0  # an epoch seen again replaces its row, never doubles it


def test_over_budget_is_distinguishable_from_pruned_by_any_client():
    study = optuna.create_study()
    trial = study.ask()
    TrialRecord(status=OVER_BUDGET, reason="over budget, never trained: gflops over budget by 0.001").save(
        trial.set_user_attr)
    study.tell(trial, state=TrialState.PRUNED)
    frame = study.trials_dataframe()  # what optuna-dashboard and pandas users see
    assert frame.loc[0, "user_attrs_status"] == "over_budget"
    assert "never trained" in frame.loc[0, "user_attrs_reason"]


def test_study_private_members_pinned_to_the_installed_optuna(tmp_path):
    """fail_trial writes on a trial another process left RUNNING, through Optuna's private storage API."""
    assert optuna.__version__ == "5.0.0", "re-check rampsearch.search.study._write_attrs against this Optuna"
    study = optuna.create_study(storage=open_storage(tmp_path, None), study_name="s")
    study.ask()  # left RUNNING, as by a killed process
    orphan = trial_by_number(study, 0)
    fail_trial(study, orphan, TrialRecord(status=INTERRUPTED, reason="interrupted (Ctrl-C)"))
    reloaded = optuna.load_study(study_name="s", storage=open_storage(tmp_path, None))
    assert reloaded.trials[0].state == TrialState.FAIL
    assert TrialRecord.of(reloaded.trials[0]).interrupted


def test_interrupted_trials_are_retried_once_and_never_counted(tmp_path):
    study = optuna.create_study(storage=open_storage(tmp_path, None), study_name="s")
    done = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(done, 0.5)
    study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    fail_trial(study, trial_by_number(study, 1), TrialRecord(status=INTERRUPTED, reason="interrupted (Ctrl-C)"))
    assert counted_trials(study.get_trials()) == (1, 0)  # the interrupted trial does not count
    assert retry_interrupted(study) == [1]
    assert retry_interrupted(study) == []  # one retry, however often the search is rerun
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and TrialRecord.of(waiting[0]).retry_of == 1
    assert waiting[0].system_attrs["fixed_params"] == trial_by_number(study, 1).params  # the same candidate
    assert counted_trials(study.get_trials()) == (1, 0)  # nor does its retry until it starts


@pytest.mark.parametrize("url,secret", [
    ("postgresql://alice:s3cret@db:5432/optuna", "s3cret"),
    ("postgresql://alice:p@ss/w0rd@db/optuna", "p@ss"),
    ("postgresql://db/optuna?user=alice&password=s3cret&sslmode=require", "s3cret"),
    ("postgresql://alice@db/optuna?options=-c%20password%3Ds3cret", "s3cret"),
    ("mysql+pymysql://alice@db/optuna?passwd=s3cret", "s3cret"),
])
def test_passwords_are_redacted_in_every_url_form(url, secret):
    assert secret not in redact(url)
    assert secret not in " ".join(redact_command(["rampsearch", "search", "--storage", url]))
    assert secret not in redact(f"could not connect to {url}: refused")


def test_unsupported_storage_scheme_names_what_would_work():
    with pytest.raises(UserError, match=r"unsupported storage; expected a URL of postgresql://, mysql://, sqlite://"):
        check_storage_url("redis://alice:s3cret@host/0")
    with pytest.raises(UserError, match=r"install it with `pip install 'PyMySQL'`") as info:
        check_storage_url("mysql://alice:s3cret@host/db")
    assert "s3cret" not in str(info.value)


def _finished(study: optuna.Study, record: TrialRecord, value: float) -> None:
    trial = study.ask()
    record.save(trial.set_user_attr)
    study.tell(trial, value)


def test_best_yaml_says_when_the_hand_set_ramp_won_the_search(tmp_path):
    import yaml

    from rampsearch.search.results import standing, write_outputs

    space = load_space(ROOT / "tests" / "data" / "tiny_space.yaml")
    handset = space.handset()
    searched = space.candidate(handset.arch, RampSchedule((1.0, 0.5, 0.5, 0.5, 1 / 3)))
    study = optuna.create_study(direction="maximize")
    _finished(study, handset.record(0), 50.0)
    _finished(study, searched.record(0), 40.0)
    result = standing(study)
    assert result.handset_scored_higher and result.best.number == 1
    assert "hand-set ramp scored better than every searched schedule" in result.sentence()
    assert "search top-1 50.00% vs 40.00%" in result.sentence()
    write_outputs(study, space, tmp_path)
    best = (tmp_path / "best.yaml").read_text()
    assert "# Note: the hand-set ramp scored better" in best and "ranked by search-split top-1 (%)" in best
    data = yaml.safe_load(best)
    assert data["handset_scored_higher"] is True and data["score"] == 40.0 and data["handset_score"] == 50.0
    assert data["score_metric"] == "top1"
    _finished(study, searched.record(0), 60.0)  # a searched schedule that beats it: no caveat
    assert not standing(study).handset_scored_higher and standing(study).sentence() is None


def test_a_loss_ranked_study_calls_the_lower_loss_better(tmp_path):
    from rampsearch.search.results import ranked_searched, standing

    space = load_space(ROOT / "tests" / "data" / "tiny_space.yaml").with_score("loss")
    handset = space.handset()
    study = optuna.create_study(direction="minimize")
    _finished(study, handset.record(0), 1.50)
    for ratios, loss in (((1.0, 0.5, 0.5, 0.5, 1 / 3), 1.40), ((0.0, 0.5, 0.5, 0.5, 1 / 3), 1.60)):
        _finished(study, space.candidate(handset.arch, RampSchedule(ratios)).record(0), loss)
    assert [t.values[0] for t, _ in ranked_searched(study)] == [1.40, 1.60]  # lowest loss first
    result = standing(study)
    assert result.score.metric == "loss" and not result.handset_scored_higher and result.sentence() is None
    won = optuna.create_study(direction="minimize")
    _finished(won, handset.record(0), 1.30)  # a lower loss than the searched schedule's: the hand-set ramp won
    _finished(won, space.candidate(handset.arch, RampSchedule((1.0, 0.5, 0.5, 0.5, 1 / 3))).record(0), 1.40)
    assert standing(won).handset_scored_higher and "search loss 1.3000 vs 1.4000" in standing(won).sentence()


def test_every_command_that_trains_takes_the_same_flags(capsys):
    from rampsearch.cli import COMMANDS, main

    for name in COMMANDS:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        wanted = ["--quiet", "--json"] + (["--device", "--set", "--keep-checkpoints"]
                                          if name in ("train", "search", "retrain", "run") else [])
        assert all(flag in text for flag in wanted), name


def test_trials_written_before_the_record_read_the_same():
    old_handset = TrialRecord.from_attrs({"baseline": True, "ramp": [0.5], "flops": 1, "params": 2})
    assert old_handset.handset and old_handset.ramp == (0.5,) and old_handset.status is None
    assert TrialRecord.from_attrs({"infeasible": True, "reason": "gflops over budget by 0.1"}).over_budget
    assert TrialRecord.from_attrs({"error": "interrupted (worker process died)"}).interrupted
    failed = TrialRecord.from_attrs({"error": "MemoryError: boom"})
    assert failed.status == "failed" and failed.reason == "MemoryError: boom"


def test_a_candidate_is_trained_once_however_its_params_spell_it(tmp_path):
    from rampsearch.search.study import duplicate_of

    space = load_space(ROOT / "tests" / "data" / "tiny_space.yaml")
    study = optuna.create_study(storage=open_storage(tmp_path, None), study_name="s")
    first, same, other = study.ask(), study.ask(), study.ask()
    handset = space.handset()
    handset.record(0).save(first.set_user_attr)
    handset.record(0).save(same.set_user_attr)  # other params, snapped to the same ramp
    space.candidate(handset.arch, RampSchedule((1.0, 0.5, 0.5, 0.5, 0.0))).record(0).save(other.set_user_attr)
    assert duplicate_of(study, first) is None  # the earlier of two equal proposals trains ...
    assert duplicate_of(study, same) == first.number  # ... the later is rejected
    assert duplicate_of(study, other) is None
    retry = study.ask()
    handset.record(0).save(retry.set_user_attr)
    TrialRecord(retry_of=first.number).save(retry.set_user_attr)
    assert duplicate_of(study, retry) is None  # a retry trains its original's candidate again


def test_a_trial_failed_by_heartbeats_is_retried_in_its_folder_and_not_counted(tmp_path):
    from rampsearch.search.study import _enqueue_retry, interrupted_numbers

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="s")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    TrialRecord(folder=trial.number).save(trial.set_user_attr)
    study.tell(trial, state=TrialState.FAIL)  # what Optuna's fail_stale_trials does before the callback
    _enqueue_retry(study, trial_by_number(study, trial.number))
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    record = TrialRecord.of(waiting)
    assert record.retry_of == trial.number and record.folder == trial.number
    assert waiting.system_attrs["fixed_params"] == trial.params
    assert counted_trials(study.get_trials()) == (0, 0) and interrupted_numbers(study.get_trials()) == {0}
    assert retry_interrupted(study) == []  # it has its retry already


def test_each_process_seeds_its_own_sampler(tmp_path):
    from rampsearch.search.study import open_study

    space = load_space(ROOT / "tests" / "data" / "tiny_space.yaml")
    _, first = open_study(space, tmp_path, "s", None)
    _, again = open_study(space, tmp_path, "s", None)
    assert first == again == space.search.seed  # the journal: one search command, reproducible on resume
    _, worker = open_study(space, tmp_path, "s", None, seed=first + 3)
    assert worker == first + 3  # a --workers process: the first's seed + its index
    url = f"sqlite:///{tmp_path}/shared.db"
    (creator, creator_seed), (_, joined_seed) = open_study(space, tmp_path, "s", url), open_study(space, tmp_path, "s", url)
    assert creator_seed == space.search.seed and joined_seed != creator_seed  # another machine joining the study
    assert len(creator.get_trials()) == 1  # the hand-set ramp, enqueued once


@pytest.mark.parametrize("states, wanted, shared, expected", [
    (["COMPLETE", "COMPLETE", "PRUNED"], 3, False, None),
    (["COMPLETE", "COMPLETE", "FAIL"], 3, False, "1 trial(s) failed (trial 2: boom)"),
    (["COMPLETE", "COMPLETE", "RUNNING"], 3, False, "trial(s) [2] did not finish; rerun the same command"),
    (["COMPLETE", "COMPLETE", "RUNNING"], 3, True, None),  # another machine is training it
    (["COMPLETE", "COMPLETE"], 3, False, "only 2 of 3 trials finished"),
    (["FAIL", "COMPLETE", "COMPLETE"], 2, False, "the hand-set baseline did not complete"),
])
def test_a_search_that_falls_short_says_why(states, wanted, shared, expected):
    from rampsearch.search import _shortfall

    study = optuna.create_study(direction="maximize")
    for number, state in enumerate(states):
        trial = study.ask()
        TrialRecord(handset=number == 0, reason="boom" if state == "FAIL" else None).save(trial.set_user_attr)
        if state != "RUNNING":
            study.tell(trial, 50.0 if state == "COMPLETE" else None, state=TrialState[state])
    problem = _shortfall(study.get_trials(), wanted, shared)
    assert problem == expected if expected is None else expected in problem
