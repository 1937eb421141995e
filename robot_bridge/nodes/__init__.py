"""The bridge's ROS 2 nodes; each module's `main()` runs its node alone (`python -m robot_bridge.nodes.<x>_node`)."""

from __future__ import annotations

import gc
import logging
import os
import sys

EXIT_TIMEOUT_S = 0.5
"""After Ctrl-C / SIGTERM: how long callbacks still running may take before the process exits without them."""


def run(node_cls, args=None) -> None:
    """Check the command line's parameters (`params.check_cli`: -p wins over --params-file, unknown keys are errors),
    rclpy.init, spin one node (multi-threaded: the franka node's e-stop answers while a command is handled) until
    Ctrl-C / SIGTERM, then destroy it (closing any hardware) and shut down. A callback that does not return within
    EXIT_TIMEOUT_S does not keep the process alive: it exits anyway (within about 1 s of the signal). A bad parameter,
    a missing checkpoint or camera ends the process with one error line.

    (rclpy's experimental EventsExecutor was tried: in 7.1.6 the policy node's timer and image callbacks never ran.)
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from robot_bridge.params import check_cli

    name = sys.modules[node_cls.__module__].NODE_NAME
    try:
        overrides = check_cli(name, list(sys.argv if args is None else args))
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"{name}: {e}")
    rclpy.init(args=args)
    node = None
    executor = MultiThreadedExecutor(num_threads=4)
    failed = ""
    try:
        node = node_cls(parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        executor.add_node(node)
        gc.freeze()  # the objects made so far (modules, the node, a policy) are never traversed by a collection again
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, FileNotFoundError) as e:  # bad parameters, a missing checkpoint or camera: one line, no traceback
        failed = f"{name}: {e}"
    finally:
        executor.shutdown(timeout_sec=EXIT_TIMEOUT_S)
        clean = callbacks_done(executor, EXIT_TIMEOUT_S)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    if failed:
        sys.exit(failed)
    if not clean:  # a callback is stuck (in a driver call): its thread would keep the interpreter from exiting
        logging.getLogger(__name__).error("a callback did not return in %.1f s after shutdown; exiting", EXIT_TIMEOUT_S)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def callbacks_done(executor, timeout: float) -> bool:
    """Wait up to `timeout` s for the callbacks the executor's threads still run (rclpy 7.1.6's `shutdown` does not
    wait for them, and Python joins those threads at exit)."""
    import time

    deadline = time.monotonic() + timeout
    pending = [f for f in getattr(executor, "_futures", []) if not f.done()]
    while pending and time.monotonic() < deadline:
        time.sleep(0.01)
        pending = [f for f in pending if not f.done()]
    return not pending


def spin_bounded(executor, period: float = 0.1) -> None:
    """Spin `executor` until it or its context shuts down, each wait at most `period` s. For an executor that gets
    nodes while it spins: `add_node` wakes it to rebuild its wait set, and rmw_fastrtps as shipped with Jazzy can lose
    that wake-up (fixed upstream in ros2/rmw_fastrtps#895), leaving the new node's timers and subscriptions out of the
    wait until something else wakes it; with nothing else to wake it, forever. The bounded wait takes them in within
    `period`.

    It stops as `Executor.spin` does (context shut down or executor shut down: `spin_once` swallows the executor's
    shutdown, so the loop checks it), and returns quietly when the context is shut down during a wait (rclpy raises
    `RCLError: context is not valid` there)."""
    from rclpy._rclpy_pybind11 import RCLError
    from rclpy.executors import ExternalShutdownException

    context = executor.context
    while context.ok() and not executor._is_shutdown:  # noqa: SLF001 (Executor.spin's own condition; no public getter)
        try:
            executor.spin_once(timeout_sec=period)
        except ExternalShutdownException:  # the context shut down during the wait (single-threaded executors)
            return
        except RCLError:
            if context.ok():
                raise
            return
