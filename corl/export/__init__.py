"""Policies out of corl: a deployable module (normalisation, deterministic action, action box)
and its TorchScript / ONNX files with a JSON card (``corl export``)."""

from corl.export.deployable import DeployablePolicy, LoadedPolicy, load_deployable

__all__ = ["DeployablePolicy", "LoadedPolicy", "load_deployable"]
