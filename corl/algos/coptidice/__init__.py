"""COptiDICE (OSRL's version): see :mod:`corl.algos.coptidice.coptidice`."""

from corl.algos.coptidice.coptidice import COptiDICEConfig, COptiDICELearner, initial_flags

__all__ = ["COptiDICEConfig", "COptiDICELearner", "initial_flags"]
