"""recorder node: appends episodes of (image, state, sent action, task) to a LeRobot dataset, each atomically.

Subscribes  /camera/image_raw, /franka/ee_pose + /franka/joint_states, /franka/applied_action, /task,
            /franka/status (twin backend: the episode's reset seed goes into the saved episode's provenance)
Publishes   /recorder/status (JSON)
Services    /recorder/start (begin an episode), /recorder/stop (save it), /recorder/discard (drop it),
            /recorder/capture_background (the next `background_frames` camera frames -> PNGs in `background_dir`:
            the empty scene, robot at home, for `cotrain.calibrate`)                                 std_srvs/Trigger
With `intervention` each frame carries LeRobot's per-frame `intervention` flag: True where the operator drove it
(/franka/applied_action's frame_id, robot_bridge/takeover.py); an episode with a flagged frame is saved with the
provenance source 'intervention' (else the configured source). Frames are paired by `frame_sync.FrameSync` (an
action waits until its image and state have arrived); saving goes through `cotrain.data.DatasetWriter` (commit per
episode), so a kill at any moment leaves the dataset with exactly the episodes saved before it, readable by Stage II.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from cotrain.data import DatasetWriter, Provenance
from robot_bridge import messages, topics
from cotrain.calibration.background_frames import save_frames
from robot_bridge.frame_sync import FrameSync
from robot_bridge.image import to_spec_image
from robot_bridge.nodes import run
from robot_bridge.params import RecorderParams, declare
from robot_bridge.takeover import OPERATOR

NODE_NAME = "recorder"


class RecorderNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.p = declare(self, RecorderParams)
        self.spec = self.p.feature_spec()
        Provenance(self.p.domain, self.p.source)  # refuses a bad domain or source at start-up
        self.task = self.p.task
        self.sync = FrameSync(int(self.p.max_sync_skew_ms * 1e6))
        self.writer = DatasetWriter(Path(self.p.dataset_root), self.spec, commit_every=1, use_video=self.p.use_video,
                                    intervention=self.p.intervention)
        self.flagged = 0  # frames of the current episode the operator drove
        self.recording = False
        self.saved = 0
        self._skipped_at_start = 0  # FrameSync.skipped when the episode started (the loss is reported per episode)
        self._lock = threading.Lock()
        self._pose: PoseStamped | None = None
        self._joints: JointState | None = None
        self.status = messages.StatusPublisher(
            self.create_publisher(String, topics.RECORDER_STATUS, messages.STATUS_QOS))
        self.create_subscription(Image, topics.IMAGE, self._on_image, 10)
        self.create_subscription(PoseStamped, topics.EE_POSE, self._on_pose, 20)
        self.create_subscription(JointState, topics.JOINT_STATES, self._on_joints, 20)
        self.create_subscription(JointState, topics.APPLIED_ACTION, self._on_action, 20)
        self.create_subscription(String, topics.TASK, self._on_task, 10)
        self.create_subscription(String, topics.FRANKA_STATUS, self._on_franka_status, messages.STATUS_QOS)
        self._twin_episode: dict | None = None  # the twin's current episode (index, seed, ...), from /franka/status
        self._start_episode: int | None = None  # its index when recording started
        self.create_service(Trigger, "~/start", self._on_start)
        self.create_service(Trigger, "~/stop", self._on_stop)
        self.create_service(Trigger, "~/discard", self._on_discard)
        self.create_service(Trigger, "~/capture_background", self._on_capture_background)
        self._background: list | None = None  # frames of a background capture in progress
        self.backgrounds = 0
        self._publish_status()

    # ---- observation buffers ------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        try:
            image = to_spec_image(messages.msg_to_image(msg), self.spec.image_height, self.spec.image_width)
        except ValueError as e:
            self.get_logger().error(f"{topics.IMAGE}: {e}", throttle_duration_sec=1.0)
            return
        with self._lock:
            wrote = self._write(self.sync.add_image(messages.stamp_to_ns(msg.header.stamp), image))
            capture = self._background
            if capture is not None:
                capture.append(image)
                if len(capture) >= self.p.background_frames:
                    self._background = None
                else:
                    capture = None
        if capture is not None:
            self._save_background(capture)
        elif wrote:
            self._publish_status()

    def _save_background(self, frames: list) -> None:
        try:
            paths = save_frames(frames, self.p.background_dir)
            self.backgrounds += 1
            self.get_logger().info(f"background: {len(paths)} frames in {self.p.background_dir}")
        except OSError as e:
            self.get_logger().error(f"background capture to {self.p.background_dir} failed: {e}")
        self._publish_status()

    def _on_capture_background(self, request, response):
        with self._lock:
            self._background = []
        response.success = True
        response.message = (f"capturing {self.p.background_frames} frames to {self.p.background_dir} (robot at home, "
                            "scene empty); /recorder/status says when done")
        self._publish_status()
        return response

    def _on_pose(self, msg: PoseStamped) -> None:
        self._pose = msg
        self._update_state()

    def _on_joints(self, msg: JointState) -> None:
        self._joints = msg
        self._update_state()

    def _update_state(self) -> None:
        if self._pose is None or self._joints is None or self._pose.header.stamp != self._joints.header.stamp:
            return  # the franka node stamps both messages of one reading alike
        try:
            state = messages.state_vector(self._pose, self._joints)
        except ValueError as e:
            self.get_logger().error(f"robot state: {e}", throttle_duration_sec=1.0)
            return
        with self._lock:
            wrote = self._write(self.sync.add_state(messages.stamp_to_ns(self._pose.header.stamp), state))
        if wrote:
            self._publish_status()

    def _on_task(self, msg: String) -> None:
        self.task = msg.data

    def _on_franka_status(self, msg: String) -> None:
        episode = json.loads(msg.data).get("episode")
        with self._lock:
            self._twin_episode = episode if isinstance(episode, dict) else None

    def _seed(self) -> int | None:
        """The twin's reset seed of the recorded episode; None for a real arm, or if the twin reset mid-recording."""
        ep = self._twin_episode
        if ep is None:
            return None
        if self._start_episode is not None and ep["index"] != self._start_episode:
            self.get_logger().warning(f"the twin reset during the recording (episode {self._start_episode} -> "
                                      f"{ep['index']}): saved without a seed")
            return None
        return int(ep["seed"])

    # ---- frames -------------------------------------------------------------------------------------
    def _on_action(self, msg: JointState) -> None:
        if not self.recording:
            return
        try:
            action = messages.msg_to_action(msg)
        except ValueError as e:
            self.get_logger().error(f"{topics.APPLIED_ACTION}: {e}", throttle_duration_sec=1.0)
            return
        with self._lock:
            self._write(self.sync.add_action(messages.stamp_to_ns(msg.header.stamp), action,
                                             operator=msg.header.frame_id == OPERATOR))
        self._publish_status()

    def _write(self, frames) -> int:
        """Adds the frames FrameSync has decided (an action may wait for its image and state); called under the lock."""
        if not self.recording:
            return 0
        for frame in frames:
            self.writer.add_frame(frame.image, frame.state, frame.action, self.task,
                                  intervention=frame.operator if self.p.intervention else None)
            self.flagged += int(frame.operator)
        return len(frames)

    # ---- services -----------------------------------------------------------------------------------
    def _on_start(self, request, response):
        with self._lock:
            if not self.task:
                response.success, response.message = False, "no task instruction (parameter 'task' or topic /task)"
            else:
                self.writer.discard_episode()
                self.sync.clear()
                self.flagged = 0
                self._skipped_at_start = self.sync.skipped
                self.recording = True
                self._start_episode = self._twin_episode["index"] if self._twin_episode else None
                response.success, response.message = True, "recording"
        self._publish_status()
        return response

    def _on_stop(self, request, response):
        with self._lock:
            self._write(self.sync.flush())  # the last actions may still wait for their image or state
            self.recording = False
            n = self.writer.num_frames_buffered
            lost = self.sync.skipped - self._skipped_at_start
            dropped = (f"; {lost} of {n + lost} applied actions dropped (watchdog holds, or no image/state within "
                       f"max_sync_skew_ms)" if lost else "")
            if n == 0:
                response.success, response.message = False, f"no frames recorded; nothing saved{dropped}"
            else:
                source = "intervention" if self.flagged else self.p.source
                index = self.writer.save_episode(Provenance(self.p.domain, source, self._seed()))
                self.saved += 1
                response.success = True
                flagged = f", {self.flagged} by the operator" if self.p.intervention else ""
                response.message = f"saved episode {index} ({n} frames{flagged}){dropped} to {self.writer.root}"
        (self.get_logger().warning if dropped else self.get_logger().info)(response.message)
        self._publish_status()
        return response

    def _on_discard(self, request, response):
        with self._lock:
            self.recording = False
            self.sync.clear()
            self.writer.discard_episode()
        response.success, response.message = True, "discarded"
        self._publish_status()
        return response

    def _publish_status(self) -> None:
        self.status.publish(state="recording" if self.recording else "idle", frames=self.writer.num_frames_buffered,
                            operator_frames=self.flagged, backgrounds=self.backgrounds,
                            capturing_background=self._background is not None,
                            waiting=self.sync.pending, saved=self.saved, skipped=self.sync.skipped,
                            dataset=str(self.writer.root))


def main(args=None) -> None:
    run(RecorderNode, args)


if __name__ == "__main__":
    main()
