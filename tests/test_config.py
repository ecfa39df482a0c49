from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from conftest import CONF_DIR, compose_config
from retina.config import EvaluateConfig, RunConfig

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
