"""cotrain: RL-based sim-real co-training for robot manipulation policies."""
