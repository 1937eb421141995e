"""The bridge's ROS 2 nodes; each module's `main()` runs its node alone (`python -m robot_bridge.nodes.<x>_node`)."""

from __future__ import annotations


def run(node_cls, args=None) -> None:
    """rclpy.init, spin one node until Ctrl-C / SIGTERM, then destroy it (closing any hardware) and shut down.

    (rclpy's experimental EventsExecutor was tried: in 7.1.6 the policy node's timer and image callbacks never ran.)
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=args)
    node = None
    try:
        node = node_cls()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
