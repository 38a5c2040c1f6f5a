"""The reinforcement-learning lesson on the real CartPole-v1: the replay buffer, the agent's loss, target network
and exploration against direct computations, refusals of unsuitable environments and a diverging run, the
reported rewards against episodes replayed here, the logged model, predict, evaluate, resume, and the preset
solving CartPole."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.data.env_datamodule import TEST_SEED_OFFSET, EnvironmentDataModule
from pipeline.data.environment import make_environment, play_episode
from pipeline.data.replay import Experience, ReplayBuffer
from pipeline.errors import DataConfigError, ModelConfigError
from pipeline.models.checkpoints import load_module
from pipeline.models.dqn import DQNModule
from pipeline.models.networks import mlp
from pipeline.train import train
from tests.conftest import make_cfg

pytestmark = pytest.mark.xdist_group("dqn")  # one module-scoped training run
SHORT = ["data.datamodule.steps_per_epoch=200", "data.datamodule.warm_up_steps=200", "trainer.max_epochs=2"]


def _agent(**overrides) -> DQNModule:
    settings = {"num_actions": 2, "net": mlp, "input_shape": [4], "optimizer": None, **overrides}
    return DQNModule(**settings)


def test_the_buffer_keeps_the_latest_transitions_and_samples_them_as_pushed():
    buffer = ReplayBuffer(capacity=3, observation_size=2)
    for i in range(5):  # 0 and 1 are overwritten
        buffer.push(
            np.array([i, -i]), action=i % 2, reward=float(i), terminated=i == 4, next_observation=np.array([i + 1, 0])
        )
    assert len(buffer) == 3
    observations, actions, rewards, terminated, following = buffer.sample(200, np.random.default_rng(0))
    assert set(rewards.tolist()) == {2.0, 3.0, 4.0}
    for o, a, r, t, f in zip(observations, actions, rewards, terminated, following, strict=True):
        i = int(r)
        assert o.tolist() == [i, -i] and int(a) == i % 2 and bool(t) == (i == 4) and f.tolist() == [i + 1, 0]
    assert observations.dtype == torch.float32 and actions.dtype == torch.int64


def test_experience_stores_terminations_but_not_time_limits_and_returns_each_episode():
    env = make_environment("CartPole-v1", max_episode_steps=20)
    experience = Experience(env, ReplayBuffer(1000, 4), seed=0, explore_seed=1)
    returns = [r for r in (experience.step(lambda _: 1, epsilon=0.0) for _ in range(300)) if r is not None]
    # always pushing right topples the pole in about ten steps: every episode ends terminated, 1 point a step
    terminated = experience.buffer.terminated[:300]
    assert len(returns) == int(terminated.sum()) and all(r < 20 for r in returns)
    assert sum(returns) + experience.episode_return == 300
    experience = Experience(make_environment("CartPole-v1", max_episode_steps=5), ReplayBuffer(100, 4), 0, 1)
    returns = [r for r in (experience.step(lambda o: int(o[2] > 0), 0.0) for _ in range(50)) if r is not None]
    assert returns == [5.0] * 10 and experience.buffer.terminated[:50].sum() == 0  # cut by the limit only


def test_greedy_episodes_repeat_from_their_seed():
    env = make_environment("CartPole-v1")
    policy = lambda o: int(o[2] + 0.5 * o[3] > 0)  # noqa: E731 - a fair hand-made balancer
    first = [play_episode(env, policy, seed) for seed in range(5)]
    assert first == [play_episode(env, policy, seed) for seed in range(5)]
    assert all(reward == steps for reward, steps in first)  # CartPole pays 1 per step


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ("CartPoel-v1", r"data.datamodule.env='CartPoel-v1': Environment `CartPoel` doesn't exist. Did you mean"),
        ("CartPole-v7", r"'CartPole-v7': Environment version `v7` for environment `CartPole` doesn't exist"),
        ("Pendulum-v1", r"'Pendulum-v1' has a continuous or structured action space, Box\(-2.0, 2.0"),
        ("Blackjack-v1", r"'Blackjack-v1' observes Tuple\(Discrete\(32\).*a vector of numbers"),
    ],
)
def test_unsuitable_environments_are_refused_naming_what_they_have(env, message):
    with pytest.raises(DataConfigError, match=message):
        EnvironmentDataModule(env=env)


def test_bad_agent_settings_are_refused_naming_the_key():
    with pytest.raises(ModelConfigError, match=r"model.gamma=1.5: expected a discount in \(0, 1\]"):
        _agent(gamma=1.5)
    with pytest.raises(ModelConfigError, match=r"model.epsilon_start=0.1, model.epsilon_end=0.5"):
        _agent(epsilon_start=0.1, epsilon_end=0.5)
    with pytest.raises(DataConfigError, match=r"warm_up_steps=10: .* at least one batch \(batch_size=64\)"):
        EnvironmentDataModule(env="CartPole-v1", warm_up_steps=10)
    for key in ("buffer_size", "val_episodes", "test_episodes", "max_episode_steps"):
        with pytest.raises(DataConfigError, match=rf"data.datamodule.{key}=0: expected at least 1"):
            EnvironmentDataModule(env="CartPole-v1", **{key: 0})
    with pytest.raises(DataConfigError, match=r"observation_names has 4 names; Acrobot-v1 observes 6 numbers"):
        EnvironmentDataModule(env="Acrobot-v1", observation_names=["a", "b", "c", "d"])
    with pytest.raises(ModelConfigError, match=r"model.net.decoder='lstm': expected one of repeat, feedback"):
        from pipeline.models.networks import seq2seq
        from pipeline.models.sequence import SequenceModule

        SequenceModule(12, 4, lambda **kw: seq2seq(**kw, decoder="lstm"), input_shape=[7], optimizer=None)


@pytest.mark.parametrize("double", [True, False])
def test_the_loss_is_the_temporal_difference_to_the_target_network(double):
    torch.manual_seed(0)
    agent = _agent(double=double, loss="mse", gamma=0.9)
    with torch.no_grad():  # a target network unlike the trained one, as between two syncs
        for p in agent.target_net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    buffer = ReplayBuffer(50, 4)
    rng = np.random.default_rng(1)
    for i in range(50):
        buffer.push(rng.normal(size=4), int(i % 2), 1.0, i % 7 == 0, rng.normal(size=4))
    batch = buffer.sample(32, rng)
    observations, actions, rewards, terminated, following = batch
    expected = []
    for o, a, r, t, f in zip(observations, actions, rewards, terminated, following, strict=True):
        online_next, target_next = agent.net(f[None])[0], agent.target_net(f[None])[0]
        next_value = target_next[online_next.argmax()] if double else target_next.max()
        target = r + (0.0 if t else 0.9 * next_value)
        expected.append((agent.net(o[None])[0, a] - target) ** 2)
    loss = float(agent.model_step(batch, "train").detach())
    assert loss == pytest.approx(float(torch.stack(expected).detach().mean()), rel=1e-5)


def test_epsilon_decays_linearly_and_the_target_follows_every_sync(monkeypatch):
    agent = _agent(epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_steps=100, target_tau=0.5)
    for step, expected in ((0, 1.0), (50, 0.55), (100, 0.1), (5000, 0.1)):
        monkeypatch.setattr(DQNModule, "global_step", step)
        assert agent.epsilon() == pytest.approx(expected)
    online, before = copy.deepcopy(agent.net.state_dict()), copy.deepcopy(agent.target_net.state_dict())
    with torch.no_grad():
        for p in agent.net.parameters():
            p.add_(1.0)
    agent._sync_target()
    for name, value in agent.target_net.state_dict().items():
        torch.testing.assert_close(value, 0.5 * before[name] + 0.5 * (online[name] + 1.0))


def test_the_target_network_is_synced_after_every_kth_update(tmp_path, monkeypatch):
    synced: list[tuple[int, bool]] = []

    def record(self: DQNModule) -> None:
        same = all(torch.equal(a, b) for a, b in zip(self.net.parameters(), self.target_net.parameters(), strict=True))
        synced.append((self.global_step, same))
        original(self)

    original = DQNModule._sync_target
    monkeypatch.setattr(DQNModule, "_sync_target", record)
    overrides = [*SHORT[:2], "trainer.max_epochs=1", "model.target_sync_steps=70", "callbacks=no_figures"]
    train(make_cfg(tmp_path, tmp_path, "experiment=cartpole_dqn", *overrides))
    assert synced == [(70, False), (140, False)]  # after the 70th and 140th optimizer steps of 200, not before


def test_accumulated_gradients_are_refused(tmp_path):
    cfg = make_cfg(tmp_path, tmp_path, "experiment=cartpole_dqn", *SHORT, "+trainer.accumulate_grad_batches=2")
    with pytest.raises(ModelConfigError, match=r"trainer.accumulate_grad_batches=2 and 1 processes are not supported"):
        train(cfg)


def test_a_diverging_agent_stops_at_the_step_it_diverged(tmp_path):
    overrides = [*SHORT, "optimizer.lr=1e30", "model.loss=mse", "trainer.gradient_clip_val=null"]
    cfg = make_cfg(tmp_path, tmp_path, "experiment=cartpole_dqn", *overrides, "callbacks=no_figures")
    with pytest.raises(FloatingPointError, match=r"DQN loss is (nan|inf) at step \d+ \(epoch 0\); lower optimizer.lr"):
        train(cfg)


def test_the_preset_runs_a_fast_dev_run_on_the_real_environment(tmp_path):
    metrics = train(make_cfg(tmp_path, tmp_path, "experiment=cartpole_dqn", "debug=fast_dev_run"))
    assert metrics["test/mean_reward"] >= 8  # CartPole cannot fall in fewer than 8 steps


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, migrated_mlflow_db):
    """Two short epochs of the preset, tracked in an MLflow store and registered as ``balancer``."""
    import shutil

    root = tmp_path_factory.mktemp("dqn")
    shutil.copyfile(migrated_mlflow_db, root / "mlflow.db")
    store = f"sqlite:///{root / 'mlflow.db'}"
    overrides = [*SHORT, "logger=mlflow", f"logger.mlflow.tracking_uri={store}"]
    overrides += ["logger.mlflow.registered_model_name=balancer", f"model_file={root / 'model.ckpt'}"]
    metrics = train(make_cfg(root, root, "experiment=cartpole_dqn", *overrides))
    return {"root": root, "store": store, "metrics": metrics, "checkpoint": root / "model.ckpt"}


def test_the_test_reward_is_the_mean_of_100_greedy_episodes_replayed_here(short_run):
    module = load_module(short_run["checkpoint"])[0]
    env = make_environment("CartPole-v1")

    def act(observation: np.ndarray) -> int:
        with torch.no_grad():
            return int(module.net(torch.as_tensor(observation)[None]).argmax())

    rewards = [play_episode(env, act, TEST_SEED_OFFSET + i)[0] for i in range(100)]
    metrics = short_run["metrics"]
    assert metrics["test/mean_reward"] == pytest.approx(np.mean(rewards))
    assert metrics["test/min_reward"] == min(rewards) and metrics["test/std_reward"] == pytest.approx(np.std(rewards))


def test_the_run_records_every_episode_and_draws_the_reward_curve(short_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(short_run["store"])
    (run,) = client.search_runs([client.get_experiment_by_name("cartpole_dqn").experiment_id])
    episodes = client.get_metric_history(run.info.run_id, "episode/reward")
    averages = client.get_metric_history(run.info.run_id, "episode/reward_avg100")
    assert [m.step for m in episodes] == list(range(1, len(episodes) + 1)) and len(episodes) > 5
    rewards = [m.value for m in episodes]
    assert averages[-1].value == pytest.approx(np.mean(rewards[-100:]))
    assert run.data.metrics["train/episodes"] == len(rewards)
    assert sum(rewards) <= 400  # 400 steps played after the warm-up, one point each
    assert run.data.tags["data.version.gymnasium"] and run.data.params["data/datamodule/env"] == "CartPole-v1"
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "figures")]
    assert "figures/rewards.png" in artifacts


def test_the_logged_model_maps_observations_to_action_values(short_run, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", short_run["store"])
    module = load_module(short_run["checkpoint"])[0]
    observations = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    with torch.no_grad():
        expected = module.net(torch.from_numpy(observations)).numpy()
    model = mlflow.pyfunc.load_model("models:/balancer@champion")
    np.testing.assert_allclose(model.predict(observations), expected, rtol=1e-5, atol=1e-6)
    assert model.metadata.metadata["output"] == "action_values"


def test_predict_reads_observations_and_writes_the_greedy_action(short_run, tmp_path):
    from tests.test_predict import run_predict

    names = ["cart_position", "cart_velocity", "pole_angle", "pole_angular_velocity"]
    rows = pd.DataFrame([[0.0, 0.0, 0.1, 0.5], [0.0, 0.0, -0.1, -0.5]], columns=names)
    rows.to_csv(tmp_path / "observations.csv", index=False)
    module = load_module(short_run["checkpoint"])[0]
    with torch.no_grad():
        values = module.net(torch.tensor(rows.to_numpy(), dtype=torch.float32)).numpy()
    for uri in (str(short_run["checkpoint"]), "models:/balancer@champion"):
        out = run_predict({"store": short_run["store"]}, uri, tmp_path / "observations.csv", tmp_path / "out.csv")
        assert out["action"].astype(str).tolist() == [str(a) for a in values.argmax(axis=1)]
        np.testing.assert_allclose(out[["value_0", "value_1"]].to_numpy(), values, rtol=1e-5)


def test_evaluate_refuses_data_of_another_task(short_run):
    from pipeline.data.spec import DatasetSpec
    from pipeline.evaluate import build_datamodule

    cfg = make_cfg(short_run["root"], short_run["root"], "experiment=cartpole_dqn")
    table = DatasetSpec("four_columns", "classification", (4,), ("a", "b"), (0.0,) * 4, (1.0,) * 4)
    with pytest.raises(ModelConfigError, match=r"model is for classification .* data=cartpole is a control dataset"):
        build_datamodule(cfg, {}, table)


def test_evaluate_replays_the_same_test_episodes(short_run, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from pipeline.evaluate import evaluate
    from tests.conftest import REPO_ROOT

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", [f"ckpt_path={short_run['checkpoint']}", f"metrics_file={tmp_path / 'm.json'}"])
    metrics = evaluate(cfg)
    assert metrics["test/mean_reward"] == short_run["metrics"]["test/mean_reward"]
    assert json.loads((tmp_path / "m.json").read_text())["test/mean_reward"] == metrics["test/mean_reward"]


def test_a_resumed_run_keeps_its_episode_history(short_run, tmp_path):
    """``resume=true`` finds the newest ``last.ckpt`` of the task (its data name is the config's, cartpole)."""
    import shutil

    last = tmp_path / "cartpole_dqn/runs/earlier/checkpoints/last.ckpt"
    last.parent.mkdir(parents=True)
    shutil.copyfile(short_run["root"] / "run/checkpoints/last.ckpt", last)
    before = torch.load(last, weights_only=True)["episode_rewards"]
    cfg = make_cfg(tmp_path, tmp_path, "experiment=cartpole_dqn", *SHORT[:2], "trainer.max_epochs=3", "resume=true")
    metrics = train(cfg)
    resumed = torch.load(next(tmp_path.glob("run/checkpoints/last.ckpt")), weights_only=True)["episode_rewards"]
    assert resumed[: len(before)] == before and len(resumed) > len(before)
    assert metrics["train/episodes"] == len(resumed)


@pytest.mark.slow
def test_the_preset_solves_cartpole(tmp_path):
    """``python -m pipeline.train experiment=cartpole_dqn``: a mean of at least 475 over the 100 test episodes."""
    metrics = train(make_cfg(tmp_path, tmp_path, "experiment=cartpole_dqn", "callbacks=no_figures"))
    assert metrics["test/mean_reward"] >= 475, json.dumps(metrics)


def test_the_reward_curve_draws_episodes_their_moving_average_and_the_solved_line():
    from pipeline.callbacks.drawing import reward_curve

    figure = reward_curve([10.0, 20.0, 30.0, 60.0], window=2, solved=475.0)
    episodes, average, solved = figure.axes[0].get_lines()
    assert list(episodes.get_ydata()) == [10, 20, 30, 60]
    assert list(average.get_ydata()) == [10, 15, 25, 45]  # the first episode averages itself alone
    assert list(solved.get_ydata()) == [475, 475] and solved.get_label() == "solved (475)"
    assert make_environment("CartPole-v1").spec.reward_threshold == 475  # the callback's default line
