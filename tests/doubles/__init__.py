"""Test doubles: stand-ins that honour the interfaces of cotrain and robot_bridge (policies, vector envs, ROS probes)."""
