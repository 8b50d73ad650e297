"""What verl's reward workers load by file path for the RLT teacher (``reward.reward_manager.source=importlib``).

verl imports a file given by path without entering it in ``sys.modules``, which breaks the dataclasses of the
scorer module; this file only imports the manager from its package, so the class is the package's.
"""

from rlrt.backends.verl.rlt_reward_loop import RLTRewardManager

__all__ = ["RLTRewardManager"]
