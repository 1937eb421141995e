"""Policies: one interface (`base.Policy`), the small VLA with flow and token heads, the LeRobot VLA adapter,
and their checkpoints."""

from cotrain.policies.base import Policy
from cotrain.policies.checkpoint import (load_partial_weights, load_policy, load_training_state, partial_weight_names,
                                        save_checkpoint)
from cotrain.policies.factory import make_policy, policy_config_from_dict, policy_config_to_dict

__all__ = ["Policy", "load_partial_weights", "load_policy", "load_training_state", "make_policy", "partial_weight_names",
           "policy_config_from_dict", "policy_config_to_dict", "save_checkpoint"]
