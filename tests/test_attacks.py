"""Observation attacks: inside the eps-box, exact at eps=0, deterministic, and actually adversarial.

A small randomly initialised (seeded) policy and critic and a fixed batch of observations:
the attacks' objectives are what is checked, not a trained agent's score.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from corl.errors import CorlError
from corl.eval.attacks import ATTACKS, make_attack
from corl.nn.critics import EnsembleQ
from corl.nn.policies import DeterministicPolicy, TanhGaussianPolicy

OBS_DIM, ACT_DIM, BATCH = 11, 3, 32
VARIANTS = [("random", 0), ("action_diff", 0), ("action_diff", 5), ("min_Q", 0), ("min_Q", 5)]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    gaussian = TanhGaussianPolicy(OBS_DIM, ACT_DIM, hidden=(32, 32))
    deterministic = DeterministicPolicy(OBS_DIM, ACT_DIM, hidden=(32, 32))
    critic = EnsembleQ(OBS_DIM, ACT_DIM, num_q=2, hidden=(32, 32))
    gen = torch.Generator().manual_seed(1)
    obs = torch.randn(BATCH, OBS_DIM, generator=gen) * 2.0
    std = torch.rand(OBS_DIM, generator=gen) + 0.5
    std[3] = 0.0  # a constant dimension in the dataset: never perturbed
    return gaussian, deterministic, critic, obs, std


def attack(name, eps, std, policy, critic=None, steps=0, seed=7, **kw):
    return make_attack(name, eps, std, policy, critic, steps=steps, generator=torch.Generator().manual_seed(seed), **kw)


def q_of(critic, policy, obs, attacked) -> torch.Tensor:
    """What min_Q attacks: Q at the clean state of the action taken at the attacked one."""
    with torch.no_grad():
        return critic.reduced(obs, policy(attacked), "min")


def sym_kl(policy, obs, attacked) -> torch.Tensor:
    with torch.no_grad():
        p, q = policy.distribution(obs), policy.distribution(attacked)
        kl = torch.distributions.kl_divergence
        return (kl(p, q) + kl(q, p)).sum(-1)


@pytest.mark.parametrize("which", ["gaussian", "deterministic"])
def test_attacks_stay_inside_the_box(setup, which):
    gaussian, deterministic, critic, obs, std = setup
    policy = gaussian if which == "gaussian" else deterministic
    eps = 0.1
    radius = eps * std
    for name, steps in VARIANTS:
        out = attack(name, eps, std, policy, critic, steps)(obs)
        assert out.shape == obs.shape and out.dtype == obs.dtype
        assert torch.all(out >= obs - radius) and torch.all(out <= obs + radius), (name, steps)
        assert torch.all((out - obs).abs() <= radius * (1 + 1e-5) + 1e-7)
        assert torch.equal(out[:, 3], obs[:, 3])  # zero-std dimension untouched
        if name == "random":
            assert (out - obs).abs().max() > 0.5 * radius.max()


def test_eps_zero_returns_clean_observations_exactly(setup):
    gaussian, deterministic, critic, obs, std = setup
    for policy in (gaussian, deterministic):
        for name, steps in VARIANTS:
            out = attack(name, 0.0, std, policy, critic, steps)(obs)
            assert torch.equal(out, obs)
            assert out is not obs  # callers may modify it in place


def test_deterministic_given_a_generator(setup):
    gaussian, _, critic, obs, std = setup
    for name, steps in VARIANTS:
        a = attack(name, 0.1, std, gaussian, critic, steps, seed=3)(obs)
        b = attack(name, 0.1, std, gaussian, critic, steps, seed=3)(obs)
        assert torch.equal(a, b), name
    c = attack("random", 0.1, std, gaussian, critic, seed=4)(obs)
    assert not torch.equal(c, attack("random", 0.1, std, gaussian, critic, seed=3)(obs))
    # one-row (unbatched) observations work too
    assert attack("min_Q", 0.1, std, gaussian, critic)(obs[0]).shape == (OBS_DIM,)


@pytest.mark.parametrize("which", ["gaussian", "deterministic"])
def test_min_q_lowers_q_and_gradient_steps_lower_it_further(setup, which):
    gaussian, deterministic, critic, obs, std = setup
    policy = gaussian if which == "gaussian" else deterministic
    eps = 0.2
    q_clean = q_of(critic, policy, obs, obs)
    q_random = q_of(critic, policy, obs, attack("random", eps, std, policy, critic)(obs))
    q_search = q_of(critic, policy, obs, attack("min_Q", eps, std, policy, critic)(obs))
    q_pgd = q_of(critic, policy, obs, attack("min_Q", eps, std, policy, critic, steps=10)(obs))
    assert q_search.mean() < q_random.mean()
    assert torch.all(q_search <= q_clean + 1e-6)  # delta = 0 is a candidate: never worse than no attack
    # same generator seed -> same search; the gradient steps start there and keep the best
    assert torch.all(q_pgd <= q_search + 1e-5)
    assert q_pgd.mean() < q_search.mean()


def test_action_diff_increases_the_action_change(setup):
    gaussian, deterministic, critic, obs, std = setup
    eps = 0.2
    kl_random = sym_kl(gaussian, obs, attack("random", eps, std, gaussian, critic)(obs))
    kl_search = sym_kl(gaussian, obs, attack("action_diff", eps, std, gaussian)(obs))
    kl_pgd = sym_kl(gaussian, obs, attack("action_diff", eps, std, gaussian, steps=10)(obs))
    assert kl_search.mean() > kl_random.mean()
    assert torch.all(kl_pgd >= kl_search - 1e-5)
    assert kl_pgd.mean() > kl_search.mean()
    # deterministic policies: squared action difference
    with torch.no_grad():
        clean = deterministic(obs)
        change = lambda attacked: (deterministic(attacked) - clean).pow(2).sum(-1)
        d_random = change(attack("random", eps, std, deterministic, None)(obs))
        d_search = change(attack("action_diff", eps, std, deterministic, None)(obs))
        d_pgd = change(attack("action_diff", eps, std, deterministic, None, steps=10)(obs))
    assert d_search.mean() > d_random.mean()
    assert d_pgd.mean() >= d_search.mean()


def test_gradient_only_variant_without_candidates(setup):
    gaussian, _, critic, obs, std = setup
    q_clean = q_of(critic, gaussian, obs, obs)
    out = attack("min_Q", 0.2, std, gaussian, critic, steps=5, candidates=0)(obs)
    assert torch.all(q_of(critic, gaussian, obs, out) <= q_clean + 1e-6)
    assert torch.all((out - obs).abs() <= 0.2 * std * (1 + 1e-5) + 1e-7)


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert text and "\n" not in text
    return text


def test_bad_arguments_are_one_line_errors(setup):
    gaussian, _, critic, obs, std = setup
    with pytest.raises(CorlError) as err:
        make_attack("min_Q", 0.1, std, gaussian)
    assert "--critic" in one_line(err)
    with pytest.raises(CorlError) as err:
        make_attack("min_q_attack", 0.1, std, gaussian, critic)
    text = one_line(err)
    assert all(name in text for name in ATTACKS)
    with pytest.raises(CorlError) as err:
        make_attack("random", -0.1, std, gaussian)
    one_line(err)
    with pytest.raises(CorlError) as err:
        make_attack("random", 0.1, np.array([1.0, np.nan]), gaussian)
    one_line(err)
    with pytest.raises(CorlError) as err:
        make_attack("random", 0.1, std[:5], gaussian)(obs)
    assert "dims" in one_line(err)
    assert make_attack("MIN-Q", 0.1, std, gaussian, critic).name == "min_Q"  # CLI spellings


def test_robustness_curves_png(tmp_path):
    from matplotlib.image import imread

    from corl.eval.plots import plot_robustness

    x = np.linspace(0.0, 0.2, 10)
    curves = {
        "drcorl": {"reward": 0.8 - x, "cost": 0.5 + 4 * x, "reward_std": 0.05 + 0 * x, "cost_std": 0.1 + 0 * x},
        "bc-safe": {"reward": 0.6 - 0.5 * x, "cost": 0.3 + 2 * x},
    }
    path = plot_robustness(x, curves, "attack eps (x obs std)", tmp_path / "sub" / "curves", title="min_Q")
    assert path.suffix == ".png" and path.exists() and path.stat().st_size > 10_000
    image = imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 800
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 50
    with pytest.raises(ValueError):
        plot_robustness(x, {"p": {"reward": x[:3], "cost": x[:3]}}, "eps", tmp_path / "bad.png")


def test_gradient_attacks_work_under_inference_mode(setup):
    """A rollout may run the policy under torch.inference_mode(); the PGD steps still work."""
    gaussian, _, critic, obs, std = setup
    expected = attack("min_Q", 0.1, std, gaussian, critic, steps=3)(obs)
    with torch.inference_mode():
        got = attack("min_Q", 0.1, std, gaussian, critic, steps=3)(obs.clone())
        got_kl = attack("action_diff", 0.1, std, gaussian, steps=3)(obs.clone())
    assert torch.allclose(got, expected)
    assert torch.all((got_kl - obs).abs() <= 0.1 * std * (1 + 1e-5) + 1e-7)


@pytest.mark.parametrize("cls_name", ["DiagGaussianPolicy", "CholeskyGaussianPolicy"])
def test_action_diff_on_other_gaussian_policies(cls_name, setup):
    """CVPO-style policies: Independent(Normal) takes the closed form, full covariance torch's KL."""
    import corl.nn.policies as policies

    cls = getattr(policies, cls_name, None)
    if cls is None:
        pytest.skip(f"{cls_name} not in corl.nn.policies")
    *_, obs, std = setup
    torch.manual_seed(0)
    policy = cls(OBS_DIM, ACT_DIM, hidden=(32, 32))

    def kl(attacked):
        with torch.no_grad():
            p, q = policy.distribution(obs), policy.distribution(attacked)
            return (torch.distributions.kl_divergence(p, q) + torch.distributions.kl_divergence(q, p)).mean()

    assert kl(attack("action_diff", 0.2, std, policy)(obs)) > kl(attack("random", 0.2, std, policy)(obs))


def test_eps_zero_attack_reproduces_the_clean_rollout(setup):
    """MICRO's acceptance check: an attack with eps = 0 gives exactly the clean score."""
    rollout = pytest.importorskip("corl.eval.rollout").rollout
    gaussian, _, critic, _, _ = setup
    std = torch.ones(OBS_DIM)
    clean = rollout("hopper-medium-v2", gaussian, episodes=2, seed=0, num_envs=1)
    zero = rollout(
        "hopper-medium-v2",
        gaussian,
        episodes=2,
        seed=0,
        num_envs=1,
        obs_transform=attack("min_Q", 0.0, std, gaussian, critic, steps=2),
    )
    assert np.array_equal(clean.reward, zero.reward) and np.array_equal(clean.length, zero.length)
    attacked = rollout(
        "hopper-medium-v2", gaussian, episodes=2, seed=0, num_envs=1, obs_transform=attack("random", 0.5, std, gaussian)
    )
    assert not np.array_equal(clean.reward, attacked.reward)
