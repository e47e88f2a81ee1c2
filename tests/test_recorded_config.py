"""A recorded config.yaml read back for reproduction: complete, or refused without quoting it."""

import pytest
from omegaconf import OmegaConf

from pipeline.job import config
from pipeline.job.recorded import parse_config
from pipeline.processes.errors import InputError


@pytest.fixture
def recorded_text(compose_config):
    """A config.yaml as a job records it."""
    return OmegaConf.to_yaml(compose_config("model.width=8", "seed=3"), resolve=True)


def test_a_complete_config_reads_back_as_recorded(recorded_text):
    cfg = parse_config(recorded_text, "config.yaml")
    assert (cfg.model.width, cfg.seed, cfg.tracking.experiment) == (8, 3, "moons")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "config.yaml is not a config: it has none of the config's keys"),
        (
            "seed: 3\n",
            "config.yaml is not a complete recorded config: it lacks dataset.n_classes, "
            "dataset.n_features, dataset.n_samples and ",
        ),
        (
            "root:x:0:0:root:/root:/bin/bash\nme:x:1000:1000:hunter2:/home/me:/bin/sh\n",
            "config.yaml is not a config: it has none of the config's keys",
        ),
        ("- a list\n- of lines with hunter2\n", "config.yaml is not a config: it has none of"),
        ("model: [hunter2\n", "config.yaml is not a config: not valid YAML at line 2"),
    ],
)
def test_what_is_not_a_complete_config_is_refused_without_quoting_it(text, message):
    with pytest.raises(InputError) as refused:
        parse_config(text, "config.yaml")
    assert str(refused.value).startswith(message)
    assert "hunter2" not in str(refused.value) and "root:x" not in str(refused.value)


def test_one_missing_key_is_named(recorded_text):
    text = recorded_text.replace("  blas_threads: 1\n", "")
    with pytest.raises(InputError, match=r"it lacks train\.blas_threads$"):
        parse_config(text, "config.yaml")


def test_a_key_added_later_may_be_missing_and_means_the_old_behaviour(recorded_text, monkeypatch):
    # As if train.blas_threads had been added to the schema after this config was recorded,
    # with 2 (not the schema's default, 1) as the value that means the old behaviour.
    monkeypatch.setitem(config.ADDED_LATER, "train.blas_threads", 2)
    older = parse_config(recorded_text.replace("  blas_threads: 1\n", ""), "config.yaml")
    assert older.train.blas_threads == 2
    assert parse_config(recorded_text, "config.yaml").train.blas_threads == 1  # recorded wins
    with pytest.raises(InputError, match=r"it lacks model\.width$"):  # only those may be missing
        parse_config(recorded_text.replace("  width: 8\n", ""), "config.yaml")
