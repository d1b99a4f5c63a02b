"""Typed configs: defaults, merging, overrides, YAML, and one clear error per bad key/type/value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from drl.config import ConfigError, dump_yaml, load_yaml, merge, parse_overrides, to_dict
from drl.registry import default_config_dict, resolve_config

CONFIG_FILES = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs").glob("*/*.yaml")
                      if p.name != "tune.yaml")  # drl tune's search spaces (tests/test_tune.py)


# ------------------------------------------------------------------------------------------------
# defaults and merging
# ------------------------------------------------------------------------------------------------


def test_resolve_defaults():
    cfg = resolve_config({})
    assert cfg.agent == "ppo"
    assert cfg.env.id == "CartPole-v1" and cfg.env.num_envs == 8 and cfg.env.vectorization == "sync"
    assert cfg.total_steps == 100_000 and cfg.device == "auto"
    # PPO defaults (Stable-Baselines3's)
    assert cfg.algo.num_steps == 2048 and cfg.algo.minibatch_size == 64
    assert cfg.algo.learning_rate == 3e-4 and cfg.algo.gamma == 0.99 and cfg.algo.gae_lambda == 0.95
    assert cfg.algo.actor_hidden == [64, 64]
    assert type(cfg.algo).__name__ == "PPOConfig"


def test_nested_merge_keeps_sibling_defaults():
    cfg = resolve_config({"env": {"num_envs": 4}, "algo": {"num_steps": 16, "learning_rate": 0.01}})
    assert cfg.env.num_envs == 4
    assert cfg.env.id == "CartPole-v1"  # sibling of an overridden nested key keeps its default
    assert cfg.env.num_eval_envs == 4
    assert cfg.algo.num_steps == 16 and cfg.algo.learning_rate == 0.01
    assert cfg.algo.gamma == 0.99


def test_merge_function():
    base = {"a": 1, "env": {"id": "x", "num_envs": 2, "kwargs": {"k": 1, "j": 2}}}
    out = merge(base, {"env": {"num_envs": 5, "kwargs": {"k": 3}}, "b": 2})
    assert out == {"a": 1, "b": 2, "env": {"id": "x", "num_envs": 5, "kwargs": {"k": 3}}}
    assert base["env"]["num_envs"] == 2  # inputs are not mutated


def test_env_kwargs_pass_through():
    cfg = resolve_config({"env": {"kwargs": {"g": 9.81, "mode": "hard"}}})
    assert cfg.env.kwargs == {"g": 9.81, "mode": "hard"}


# ------------------------------------------------------------------------------------------------
# --set overrides
# ------------------------------------------------------------------------------------------------


def test_parse_overrides_values():
    out = parse_overrides([
        "algo.learning_rate=1e-3",
        "algo.clip_coef=2.5E-1",
        "env.num_envs=16",
        "algo.anneal_lr=true",
        "progress=False",
        "algo.actor_hidden=[64,64]",
        "algo.target_kl=null",
        "env.id=drl/CartPole-v0",
    ])
    assert out == {
        "algo": {"learning_rate": 0.001, "clip_coef": 0.25, "anneal_lr": True, "actor_hidden": [64, 64],
                 "target_kl": None},
        "env": {"num_envs": 16, "id": "drl/CartPole-v0"},
        "progress": False,
    }
    assert isinstance(out["algo"]["learning_rate"], float)
    assert isinstance(out["env"]["num_envs"], int)


def test_overrides_resolve():
    cfg = resolve_config(merge({"algo": {"num_steps": 32}},
                               parse_overrides(["algo.learning_rate=1e-3", "algo.target_kl=0.02",
                                                "env.kwargs.scale=1e-2"])))
    assert cfg.algo.learning_rate == 0.001 and cfg.algo.target_kl == 0.02
    assert cfg.env.kwargs == {"scale": 0.01}  # untyped values are numbers too, not the string '1e-2'


@pytest.mark.parametrize("pair", ["algo.learning_rate", "=3"])
def test_parse_overrides_malformed(pair):
    with pytest.raises(ConfigError, match="override"):
        parse_overrides([pair])


def test_parse_overrides_conflict():
    with pytest.raises(ConfigError, match="conflicts"):
        parse_overrides(["algo=3", "algo.gamma=0.9"])


# ------------------------------------------------------------------------------------------------
# errors: unknown key, wrong type, impossible value
# ------------------------------------------------------------------------------------------------


def test_unknown_top_level_key():
    with pytest.raises(ConfigError) as err:
        resolve_config({"totl_steps": 10})
    msg = str(err.value)
    assert "'totl_steps'" in msg
    for valid in ("total_steps", "env", "algo", "seed", "device"):
        assert valid in msg


def test_unknown_nested_key():
    with pytest.raises(ConfigError) as err:
        resolve_config({"algo": {"lr": 1e-3}})
    msg = str(err.value)
    assert "'algo.lr'" in msg
    assert "learning_rate" in msg and "gae_lambda" in msg and "minibatch_size" in msg
    with pytest.raises(ConfigError, match=r"'env\.nenvs'.*num_envs"):
        resolve_config({"env": {"nenvs": 3}})


@pytest.mark.parametrize(
    ("raw", "key", "expected"),
    [
        ({"env": {"num_envs": "eight"}}, "env.num_envs", "must be an integer"),
        ({"total_steps": 10.5}, "total_steps", "must be an integer"),
        ({"env": {"num_envs": True}}, "env.num_envs", "must be an integer"),
        ({"algo": {"gamma": True}}, "algo.gamma", "must be a number"),
        ({"algo": {"learning_rate": "fast"}}, "algo.learning_rate", "must be a number"),
        ({"algo": {"anneal_lr": "yes"}}, "algo.anneal_lr", "must be true or false"),
        ({"algo": {"actor_hidden": 64}}, "algo.actor_hidden", "must be a list"),
        ({"algo": {"actor_hidden": [64, "x"]}}, "algo.actor_hidden[1]", "must be an integer"),
        ({"algo": {"target_kl": "abc"}}, "algo.target_kl", "float | None"),
        ({"env": {"id": 3}}, "env.id", "must be a string"),
        ({"env": 3}, "env", "mapping of EnvConfig"),
        ({"algo": 3}, "algo", "mapping of PPOConfig"),
        ({"env": {"kwargs": [1]}}, "env.kwargs", "must be a mapping"),
    ],
)
def test_wrong_types(raw, key, expected):
    with pytest.raises(ConfigError) as err:
        resolve_config(raw)
    msg = str(err.value)
    assert f"'{key}'" in msg
    assert expected in msg


def test_type_coercions_that_are_exact():
    cfg = resolve_config({"total_steps": "1_000", "seed": 3.0, "algo": {"learning_rate": 1, "gamma": "0.5"}})
    assert cfg.total_steps == 1000 and isinstance(cfg.total_steps, int)
    assert cfg.seed == 3 and isinstance(cfg.seed, int)
    assert cfg.algo.learning_rate == 1.0 and isinstance(cfg.algo.learning_rate, float)
    assert cfg.algo.gamma == 0.5


@pytest.mark.parametrize(
    ("raw", "key", "valid"),
    [
        ({"algo": {"learning_rate": -1e-3}}, "algo.learning_rate", "must be > 0"),
        ({"algo": {"learning_rate": 0}}, "algo.learning_rate", "must be > 0"),
        ({"env": {"num_envs": 4}, "algo": {"num_steps": 10, "minibatch_size": 16}}, "algo.minibatch_size",
         "must divide the rollout batch algo.num_steps x env.num_envs = 10 x 4 = 40"),
        ({"env": {"num_envs": 0}}, "env.num_envs", "must be >= 1"),
        ({"algo": {"gamma": 1.5}}, "algo.gamma", "must be in [0, 1]"),
        ({"algo": {"gae_lambda": -0.1}}, "algo.gae_lambda", "must be in [0, 1]"),
        ({"device": "gpu"}, "device", "must be 'auto', 'cpu', 'cuda' or 'cuda:<index>'"),
        ({"device": "cuda:x"}, "device", "must be 'auto', 'cpu', 'cuda' or 'cuda:<index>'"),
        ({"device": "cudafoo"}, "device", "must be 'auto', 'cpu', 'cuda' or 'cuda:<index>'"),
        ({"agent": "dqn"}, "agent", "valid agents: ['aac', 'aacd', 'aawr', 'bc', 'camrl', 'dagger', 'happo', "
                                    "'happo-competitive', 'mappo', 'mt-ppo', 'ppo', "
                                    "'ppo-residual', 'rarl', 'residual', 'sac', 'subpo', 'td3']"),
        ({"algo": {"activation": "sigmoid"}}, "algo.activation", "must be one of ['tanh', 'relu', 'elu', 'silu']"),
        ({"env": {"vectorization": "threads"}}, "env.vectorization", "must be one of ['sync', 'async']"),
        ({"total_steps": 0}, "total_steps", "must be >= 1"),
        ({"algo": {"clip_value": -1.0}}, "algo.clip_value", "must be > 0 or null"),
    ],
)
def test_impossible_values(raw, key, valid):
    with pytest.raises(ConfigError) as err:
        resolve_config(raw)
    msg = str(err.value)
    assert f"'{key}'" in msg
    assert valid in msg


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_valid_devices(device):
    assert resolve_config({"device": device}).device == device  # checked, not resolved: no GPU needed


# ------------------------------------------------------------------------------------------------
# YAML files
# ------------------------------------------------------------------------------------------------


def test_load_yaml_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "agent: ppo\n"
        "env:\n  id: Pendulum-v1\n  num_envs: 4\n"
        "algo:\n  num_steps: 64\n  minibatch_size: 64\n  learning_rate: 3e-4\n  actor_hidden: [32, 32]\n"
    )
    raw = load_yaml(path)
    assert raw["algo"]["learning_rate"] == 3e-4  # YAML 1.2 float, not the string '3e-4'
    cfg = resolve_config(raw)
    assert cfg.env.id == "Pendulum-v1" and cfg.env.num_envs == 4
    assert cfg.algo.num_steps == 64 and cfg.algo.actor_hidden == [32, 32]
    assert cfg.algo.learning_rate == 3e-4


def test_load_yaml_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file '.*nope\.yaml' does not exist"):
        load_yaml(tmp_path / "nope.yaml")


def test_load_yaml_malformed(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("algo:\n  gamma: [0.9\n  lr: 1\n")
    with pytest.raises(ConfigError, match=r"config file '.*bad\.yaml' is not valid YAML"):
        load_yaml(path)


def test_load_yaml_not_a_mapping_and_empty(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping at the top level, got list"):
        load_yaml(path)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_yaml(empty) == {}


def test_to_dict_yaml_round_trip(tmp_path):
    cfg = resolve_config({
        "env": {"id": "Pendulum-v1", "num_envs": 4, "kwargs": {"g": 9.81}},
        "algo": {"num_steps": 32, "minibatch_size": 32, "learning_rate": 1e-8, "target_kl": 0.015,
                 "activation": "relu", "critic_hidden": [256, 128, 64]},
        "device": "cpu",
    })
    data = to_dict(cfg)
    assert isinstance(data["algo"], dict) and data["algo"]["activation"] == "relu"
    assert resolve_config(data) == cfg
    path = tmp_path / "config.yaml"
    dump_yaml(data, path)
    again = resolve_config(load_yaml(path))
    assert again == cfg
    assert to_dict(again) == data
    assert yaml.safe_load(path.read_text())["algo"]["critic_hidden"] == [256, 128, 64]


def test_default_config_dict_has_every_key():
    data = default_config_dict("ppo")
    assert set(data) == {"agent", "env", "total_steps", "seed", "device", "eval_interval", "eval_episodes",
                         "checkpoint_interval", "torch_threads", "progress", "log_interval", "algo", "wrappers"}
    assert data["algo"]["num_steps"] == 2048
    assert resolve_config(data) == resolve_config({})


def test_there_are_config_files():
    assert CONFIG_FILES, "configs/*/*.yaml is empty"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_config_file_resolves(path):
    raw = load_yaml(path)
    cfg = resolve_config(raw)
    assert cfg.agent == path.parent.name
    # the file is named after its env (a "drl/" namespace is written "drl-"), a variant after a last "-"
    # (configs/aawr/drl-ActiveSearch-v0-symmetric.yaml); a "mamujoco:" prefix is written "mamujoco-"
    env_name = cfg.env.id.replace("/", "-").replace(":", "-")
    assert path.stem == env_name or (path.stem.startswith(f"{env_name}-") and path.stem[len(env_name) + 1:].isalpha())


# ------------------------------------------------------------------------------------------------
# huge, infinite and NaN numbers; natural bounds; integral spellings
# ------------------------------------------------------------------------------------------------

FLOAT_KEYS = ["learning_rate", "gamma", "gae_lambda", "clip_coef", "ent_coef", "vf_coef", "max_grad_norm",
              "log_std_init"]
OPTIONAL_FLOAT_KEYS = ["clip_value", "target_kl"]


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), "inf", ".nan", 10**400])
@pytest.mark.parametrize("name", FLOAT_KEYS + OPTIONAL_FLOAT_KEYS)
def test_non_finite_floats_are_refused_naming_the_key(name, value):
    raw = {"algo": {name: value}}
    if value in ("inf", ".nan"):  # as YAML spells them in a file or --set
        raw = merge({}, parse_overrides([f"algo.{name}={value}"]))
    with pytest.raises(ConfigError) as err:
        resolve_config(raw)
    msg = str(err.value)
    assert msg.startswith(f"config key 'algo.{name}': must be a finite number, got ")
    assert msg.endswith("(or null)") == (name in OPTIONAL_FLOAT_KEYS)


def test_nan_in_env_kwargs_is_refused():
    with pytest.raises(ConfigError, match=r"^config key 'env\.kwargs\.params\.g': must be a number, got nan$"):
        resolve_config({"env": {"kwargs": {"params": {"g": float("nan")}}}})
    assert resolve_config({"env": {"kwargs": {"limit": float("inf")}}}).env.kwargs == {"limit": float("inf")}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"seed": -1}, "config key 'seed': must be >= 0, got -1"),
        ({"seed": 2**64}, "config key 'seed': must be <= 2**63 - 1, got 1.84e+19"),
        ({"total_steps": 1e30}, "config key 'total_steps': must be <= 1e+15, got 1e+30"),
        ({"total_steps": -5}, "config key 'total_steps': must be >= 1, got -5"),
        ({"total_steps": 10**400}, "config key 'total_steps': must be <= 1e+15, got 1e+400"),
        ({"total_steps": "1e999999999"}, "config key 'total_steps': must be an integer, got '1e999999999'"),
        ({"algo": {"num_steps": -10**400}}, "config key 'algo.num_steps': must be >= 1, got -1e+400"),
        ({"algo": {"num_steps": 10**400}}, "config key 'algo.num_steps': must be <= 1e+15, got 1e+400"),
        ({"algo": {"clip_coef": 1e308}}, "config key 'algo.clip_coef': must be a finite number within float32's "
                                         "range (|x| <= 3.403e+38), got 1e+308"),
        ({"eval_episodes": 10**9}, "config key 'eval_episodes': must be <= 1000000, got 1000000000"),
        ({"torch_threads": 10**9}, "config key 'torch_threads': must be <= 1024 (0 keeps torch's default), "
                                   "got 1000000000"),
        ({"torch_threads": -1}, "config key 'torch_threads': must be >= 0 (0 keeps torch's default), got -1"),
        ({"eval_interval": 10**30}, "config key 'eval_interval': must be <= 1e+15 (0 evaluates only at the end), "
                                    "got 1e+30"),
        ({"checkpoint_interval": -1}, "config key 'checkpoint_interval': must be >= 0 (0 saves only at the end), "
                                      "got -1"),
        ({"env": {"num_envs": 2**31}}, "config key 'env.num_envs': must be <= 2**31 - 1, got 2147483648"),
        ({"env": {"num_eval_envs": -3}}, "config key 'env.num_eval_envs': must be >= 1, got -3"),
        ({"algo": {"num_epochs": 10**9}}, "config key 'algo.num_epochs': must be <= 10000, got 1000000000"),
        ({"algo": {"num_epochs": 0}}, "config key 'algo.num_epochs': must be >= 1, got 0"),
        ({"algo": {"log_std_init": 100.0}}, "config key 'algo.log_std_init': must be <= 20.0 (the log of the "
                                            "initial action std), got 100.0"),
        ({"algo": {"actor_hidden": [10**9]}}, "config key 'algo.actor_hidden': widths must be in [1, 65536], "
                                              "got [1000000000]"),
        ({"algo": {"critic_hidden": [16384, 16384]}}, "config key 'algo.critic_hidden': the hidden layers hold "
                                                      "268,435,456 weights; at most 134,217,728 are allowed, got "
                                                      "[16384, 16384]"),
    ],
)
def test_out_of_bounds_values_name_the_key_and_the_bound(raw, message):
    with pytest.raises(ConfigError) as err:
        resolve_config(raw)
    assert str(err.value) == message


def test_legitimate_extremes_still_pass():
    cfg = resolve_config({
        "seed": 2**63 - 1, "total_steps": 10**15, "eval_episodes": 10**6, "torch_threads": 1024,
        "eval_interval": 0, "checkpoint_interval": 10**15,
        "algo": {"num_epochs": 10_000, "learning_rate": 10.0, "clip_coef": 1e9, "vf_coef": 1e9, "ent_coef": 0.0,
                 "max_grad_norm": 1e9, "gamma": 1.0, "gae_lambda": 0.0, "log_std_init": -20.0,
                 "actor_hidden": [8192, 8192], "critic_hidden": [65536]},
    })
    assert cfg.seed == 2**63 - 1 and cfg.algo.clip_coef == 1e9 and cfg.algo.critic_hidden == [65536]


@pytest.mark.parametrize(("value", "expected"), [("1e6", 10**6), ("1_000_000", 10**6), (1e6, 10**6),
                                                  ("2.5e3", 2500), ("  42 ", 42), ("1E+2", 100)])
def test_integral_spellings_are_integers(value, expected):
    cfg = resolve_config({"total_steps": value})
    assert cfg.total_steps == expected and type(cfg.total_steps) is int


@pytest.mark.parametrize("value", ["1.5e0", "abc", "1e", 1.5, "nan", "inf", float("nan"), True, [1]])
def test_non_integral_values_are_refused(value):
    with pytest.raises(ConfigError) as err:
        resolve_config({"total_steps": value})
    assert str(err.value) == f"config key 'total_steps': must be an integer, got {value!r}"


def test_set_total_steps_scientific():
    assert resolve_config(parse_overrides(["total_steps=1e6"])).total_steps == 1_000_000
    assert resolve_config(parse_overrides(["total_steps=1_000_000"])).total_steps == 1_000_000
    with pytest.raises(ConfigError, match=r"^config key 'total_steps': must be an integer, got 1\.5$"):
        resolve_config(parse_overrides(["total_steps=1.5e0"]))


# ------------------------------------------------------------------------------------------------
# the CLI's whole-number arguments
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "attr", "expected"), [
    (["train", "--steps", "1e6"], "steps", 1_000_000),
    (["train", "--steps", "1_000_000"], "steps", 1_000_000),
    (["train", "--steps", "250000"], "steps", 250_000),
    (["train", "--num-envs", "4"], "num_envs", 4),
    (["train", "--seed", "0"], "seed", 0),
    (["eval", "run", "--episodes", "1e2"], "episodes", 100),
])
def test_cli_whole_numbers(argv, attr, expected):
    from drl.cli import build_parser

    assert getattr(build_parser().parse_args(argv), attr) == expected


@pytest.mark.parametrize(("argv", "message"), [
    (["--steps", "1.5e0"], "argument --steps: steps must be a whole number (e.g. 1000000, 1e6 or 1_000_000), "
                           "got '1.5e0'"),
    (["--steps", "abc"], "argument --steps: steps must be a whole number (e.g. 1000000, 1e6 or 1_000_000), "
                         "got 'abc'"),
    (["--steps", "0"], "argument --steps: steps must be >= 1, got '0'"),
    (["--num-envs", "0"], "argument --num-envs: num-envs must be >= 1, got '0'"),
    (["--num-envs", "-2"], "argument --num-envs: num-envs must be >= 1, got '-2'"),
    (["--seed", "-1"], "argument --seed: seed must be >= 0, got '-1'"),
    (["--seed", "1.5"], "argument --seed: seed must be a whole number (e.g. 1000000, 1e6 or 1_000_000), got '1.5'"),
])
def test_cli_refuses_bad_numbers_in_one_line(argv, message, capsys):
    from drl.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", *argv])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"drl train: error: {message}"


def test_cli_eval_episodes_bounded(capsys):
    from drl.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["eval", "run", "--episodes", "1e9"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == ("drl eval: error: argument --episodes: episodes must "
                                                                "be <= 1000000, got '1e9'")


def test_cli_seed_beyond_range_names_the_key(capsys):
    from drl.cli import main

    assert main(["train", "--seed", str(2**64), "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == "drl train: error: config key 'seed': must be <= 2**63 - 1, got 1.84e+19"


def test_path_keys_are_stored_absolute(tmp_path, monkeypatch):
    """algo.demos / algo.teacher given as relative paths (--set, a config file) name the same place from
    any working folder later: they are made absolute when the config is built."""
    monkeypatch.chdir(tmp_path)
    cfg = resolve_config({"agent": "aawr", "env": {"id": "drl/ActiveSearch-v0"}, "algo": {"demos": "d/demos.pt"}})
    assert cfg.algo.demos == str(tmp_path.resolve() / "d" / "demos.pt")
    cfg = resolve_config({"agent": "aacd", "env": {"id": "drl/CartPoleNoVel-v0"}, "algo": {"teacher": "runs/t"}})
    assert cfg.algo.teacher == str(tmp_path.resolve() / "runs" / "t")
    assert resolve_config({"agent": "aacd", "env": {"id": "drl/CartPoleNoVel-v0"}}).algo.teacher is None
    with pytest.raises(ConfigError, match=r"config key 'algo.demos': not a usable path"):
        resolve_config({"agent": "aawr", "env": {"id": "drl/ActiveSearch-v0"}, "algo": {"demos": "a\x00b"}})


def test_an_override_of_one_env_kwarg_keeps_the_config_files_other_kwargs():
    """`--set env.kwargs.capture_radius=0.1` on a tuned config with `kwargs: {shaping: 1.0}` adds to its kwargs;
    a config layer (the file over the defaults) still replaces the kwargs whole."""
    from drl import api
    from drl.config import merge

    cfg = api.load_config("happo-competitive", "drl/PursuitEvasion-v0",
                          overrides={"env": {"kwargs": {"capture_radius": 0.1}}})
    assert cfg.env.kwargs == {"shaping": 1.0, "capture_radius": 0.1}
    layers = merge({"env": {"kwargs": {"a": 1}}}, {"env": {"kwargs": {"b": 2}}})
    assert layers == {"env": {"kwargs": {"b": 2}}}
    assert merge({"env": {"kwargs": {"a": 1}}}, {"env": {"kwargs": {"b": 2}}}, replace=()) == {
        "env": {"kwargs": {"a": 1, "b": 2}}}
