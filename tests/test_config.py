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


# --- Fixed choices: a typo stops the run before any data is read ----------------------------

# key, an override that selects its context (if any), and the valid choices the message lists.
FIXED_CHOICES = [
    ("train.precision", [], ["auto", "float32", "mixed_float16", "mixed_bfloat16"]),
    ("train.on_nonfinite", [], ["stop", "rollback"]),
    ("train.sampler", [], ["shuffle", "balanced"]),
    ("train.adaptation", [], ["finetune", "linear_probe"]),
    ("checkpoint.best_metric", [], ["referable_auc", "sensitivity", "specificity"]),
    ("checkpoint.best_mode", [], ["max", "min"]),
    ("model.head", [], ["softmax", "coral", "corn", "regression", "referable"]),
    ("grading.thresholds", [], ["fitted", "fixed"]),
    ("model.name", [], ["small_cnn", "resnet50", "efficientnet_b0", "inception_v3"]),
    ("model.weights", [], ["none", "imagenet"]),
    ("trainer.strategy", [], ["auto", "default", "mirrored", "multi_worker"]),
    ("trainer.cluster", [], ["auto", "tf_config", "slurm"]),
    ("data.on_error", [], ["skip", "fail"]),
    ("data.layout", [], ["synthetic", "aptos2019", "eyepacs", "messidor2", "idrid", "folder"]),
    ("optimizer.name", [], ["adam", "adamw", "sgd"]),
    ("optimizer.head.name", ["optimizer=backbone_head"], ["adam", "adamw", "sgd"]),
    ("schedule.name", [], ["constant", "warmup_cosine", "step"]),
    ("loss.class_weights", [], ["none", "balanced"]),
    ("quality.action", [], ["retake", "refer"]),
]


def _typo_message(key: str, context: list[str], tmp_path) -> str:
    """Composes with ``<key>=tpyo`` as the entry point does and starts training; returns
    the error's text (Hydra's, at composition, or retina's, at start-up)."""
    from conftest import smoke_config
    from retina.training.loop import train

    try:
        cfg = smoke_config(tmp_path, [*context, f"{key}=tpyo"])
        train(cfg, tmp_path / "run")
    except (ConfigCompositionException, ValidationError, ConfigError) as error:
        return f"{error} {error.__cause__ or ''}"
    pytest.fail(f"{key}=tpyo was accepted")


@pytest.mark.parametrize("key, context, choices", FIXED_CHOICES, ids=[k for k, *_ in FIXED_CHOICES])
def test_a_typo_in_a_fixed_choice_stops_before_any_data_naming_key_and_choices(
    key, context, choices, tmp_path
):
    message = _typo_message(key, context, tmp_path)
    assert key in message and "tpyo" in message, message
    assert all(choice in message for choice in choices), message
    assert not (tmp_path / "synthetic").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    "name, key, required",
    [
        ("evaluate", "split", ["run_dir=/r"]),
        ("predict", "operating_point", ["run_dir=/r", "input=/i"]),
        ("export", "format", ["run_dir=/r"]),
    ],
)
def test_entry_point_choices_are_refused_at_composition(name, key, required):
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(name, [*required, f"{key}=tpyo"])
    message = f"{error.value} {error.value.__cause__}"
    assert key in message and "tpyo" in message and "expected one of" in message


def test_a_choice_set_in_python_is_checked_too():
    from retina.config import check_choices

    cfg = RunConfig()
    cfg.train.on_nonfinite = "rolback"
    with pytest.raises(ConfigError, match=r"train\.on_nonfinite='rolback'.*'stop', 'rollback'"):
        check_choices(cfg)


def test_the_command_line_names_a_mistyped_key_and_its_choices(tmp_path):
    from conftest import run_module

    result = run_module("retina.train", "train.precision=flaot32", cwd=tmp_path, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "train.precision" in output and "mixed_bfloat16" in output, output[-2000:]
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()


# --- Run directories written before the operating_points group ------------------------------


def test_a_config_from_before_the_move_is_read_with_its_values_in_the_new_place(tmp_path):
    from retina.run_dir import load_run_config

    old = OmegaConf.to_container(OmegaConf.structured(RunConfig()))
    del old["operating_points"]
    old["train"].update(referable_threshold=0.4, target_sensitivity=0.9, target_specificity=0.95)
    OmegaConf.save(OmegaConf.create(old), tmp_path / "config.yaml")
    cfg = load_run_config(tmp_path)
    points = cfg.operating_points
    assert (points.referable_threshold, points.target_sensitivity) == (0.4, 0.9)
    assert points.target_specificity == 0.95 and not hasattr(cfg.train, "referable_threshold")


def test_help_lists_entry_points_groups_and_the_keys_people_change(tmp_path):
    from conftest import run_module

    result = run_module("retina.train", "--help", cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    for entry in (
        "retina.train",
        "retina.evaluate",
        "retina.predict",
        "retina.export",
        "retina.explain",
    ):
        assert f"python -m {entry}" in text
    assert "model: efficientnet_b0, efficientnet_b1" in text and "data: aptos2019" in text
    keys = [line.split()[0] for line in text.split("The ten keys")[1].splitlines()[1:11]]
    assert len(keys) == 10 and "train.epochs=30" in keys and "hydra.run.dir=runs/NAME" in keys


def test_a_sweep_job_folder_has_no_glob_characters():
    """TensorFlow's checkpoint reader globs its path: a job folder named
    model.widths=[8,16] saved checkpoints it could not read back (found on a real sweep)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", ["model.widths=[8,16]"], return_hydra_config=True)
    assert cfg.hydra.sweep.subdir == "model.widths=(8,16)"


def test_a_run_dir_with_glob_characters_is_refused_before_anything_runs(tmp_path):
    from conftest import smoke_config
    from retina.training.loop import train

    with pytest.raises(ConfigError, match=r"contains \[ \]"):
        train(smoke_config(tmp_path), tmp_path / "run[1]")
    assert not (tmp_path / "synthetic").exists()  # no data generated
