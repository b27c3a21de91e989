"""Simulator envs: construction per family, the safety-gymnasium shim, vector envs."""

from corl.envs.factory import env_factory, make_env, make_vector_env, step_costs

__all__ = ["make_env", "make_vector_env", "env_factory", "step_costs"]
