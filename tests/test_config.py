from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from conftest import CONF_DIR, compose_config
from retina.config import EvaluateConfig, RunConfig, to_typed
from retina.errors import ConfigError

GROUP_OPTIONS = [(p.parent.name, p.stem) for p in sorted(CONF_DIR.glob("*/*.yaml"))]


@pytest.mark.parametrize("group, option", GROUP_OPTIONS)
def test_every_group_option_composes_into_the_schema(group, option):
    cfg = OmegaConf.to_object(compose_config("train", [f"{group}={option}"]))
    assert isinstance(cfg, RunConfig)


def test_evaluate_config_composes():
    cfg = OmegaConf.to_object(compose_config("evaluate", ["run_dir=/somewhere"]))
    assert isinstance(cfg, EvaluateConfig) and cfg.checkpoint == "latest"


def test_misspelt_key_is_refused_by_name():
    with pytest.raises(ConfigCompositionException) as error:
        compose_config("train", ["train.epoch=3"])
    assert "epoch" in str(error.value.__cause__ or error.value)


def test_wrong_type_is_refused_by_name():
    with pytest.raises((ConfigCompositionException, ValidationError)) as error:
        OmegaConf.to_object(compose_config("train", ["train.batch_size=lots"]))
    assert "batch_size" in str(error.value) + str(error.value.__cause__)


def test_every_yaml_field_is_commented():
    for path in sorted(Path(CONF_DIR).rglob("*.yaml")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            is_field = ":" in stripped and not stripped.startswith(("#", "-"))
            if is_field and not stripped.endswith(":"):
                assert "#" in line, f"{path.name}:{number} has no comment: {line!r}"


@pytest.mark.parametrize(
    "name, required",
    [
        ("evaluate", ["run_dir=/r"]),
        ("predict", ["run_dir=/r", "input=/i"]),
        ("export", ["run_dir=/r"]),
    ],
)
def test_every_entry_point_config_composes_into_its_schema(name, required):
    cfg = OmegaConf.to_object(compose_config(name, required))
    assert type(cfg).__name__ == f"{name.capitalize()}Config"


def test_hydra_presets_compose():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        slurm = compose("train", ["hydra/launcher=slurm"], return_hydra_config=True)
        optuna = compose("train", ["hydra/sweeper=optuna"], return_hydra_config=True)
        joblib = compose("train", ["hydra/launcher=joblib"], return_hydra_config=True)
        nodes = compose(
            "train",
            ["hydra/launcher=slurm_multi_worker", "trainer.strategy=multi_worker"],
            return_hydra_config=True,
        )
    assert "submitit" in slurm.hydra.launcher._target_ and slurm.hydra.launcher.tasks_per_node == 1
    assert "submitit" in nodes.hydra.launcher._target_ and nodes.trainer.strategy == "multi_worker"
    assert (nodes.hydra.launcher.nodes, nodes.hydra.launcher.tasks_per_node) == (2, 1)
    assert "optuna" in optuna.hydra.sweeper._target_
    assert "joblib" in joblib.hydra.launcher._target_


@pytest.mark.parametrize("where", ["model", "optimizer", "data", "train"])
def test_a_foreign_target_is_refused_by_name(where):
    with pytest.raises(ConfigError, match=rf"^{where}\._target_='os.system': configs cannot"):
        to_typed(compose_config("train", [f"+{where}._target_=os.system"]))


def test_experiment_presets_set_their_recipe():
    cfg = OmegaConf.to_object(compose_config("train", ["experiment=aptos_efficientnet_b3"]))
    assert (cfg.model.name, cfg.data.layout, cfg.preprocess.image_size) == (
        "efficientnet_b3",
        "aptos2019",
        300,
    )
    for path in sorted((CONF_DIR / "experiment").glob("*.yaml")):
        assert f"experiment={path.stem}" in path.read_text().splitlines()[1], path.name
