"""Conversions between standard ROS messages and the arrays of the feature spec."""

from __future__ import annotations

import json

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from cotrain.data.spec import ACTION_NAMES
from robot_bridge import pose

STATUS_QOS = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
"""Status topics are latched: a late subscriber gets the node's current status (published only on change)."""

ARM_JOINTS = tuple(f"fr3_joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("fr3_finger_joint1", "fr3_finger_joint2")


def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def image_to_msg(image: np.ndarray, stamp_ns: int, frame_id: str) -> Image:
    image = np.ascontiguousarray(image, dtype=np.uint8)
    h, w, _ = image.shape
    msg = Image(height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3)
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.data = image.tobytes()
    return msg


def msg_to_image(msg: Image, copy: bool = True) -> np.ndarray:
    """uint8 HxWx3 RGB (bgr8 is converted; other encodings are refused). `copy=False`: an rgb8 image without row
    padding is a view on the message's buffer (no allocation; the array keeps the buffer alive)."""
    if msg.encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"image encoding {msg.encoding!r}: expected rgb8 or bgr8")
    if len(msg.data) != msg.height * msg.step or msg.step < msg.width * 3:
        raise ValueError(f"image: {len(msg.data)} bytes for {msg.height} rows of step {msg.step} and width {msg.width}")
    arr = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)[:, : msg.width * 3]
    arr = arr.reshape(msg.height, msg.width, 3)
    if msg.encoding == "bgr8":
        return arr[:, :, ::-1].copy()
    return arr.copy() if copy else arr


def action_to_msg(action: np.ndarray, stamp_ns: int) -> JointState:
    msg = JointState(name=list(ACTION_NAMES), position=[float(v) for v in action])
    msg.header.stamp = ns_to_stamp(stamp_ns)
    return msg


def msg_to_action(msg: JointState) -> np.ndarray:
    """The 7-d action; a message whose names are not ACTION_NAMES (a mis-wired topic) is refused."""
    if tuple(msg.name) != ACTION_NAMES:
        raise ValueError(f"action message names {list(msg.name)}: expected {list(ACTION_NAMES)}")
    return np.asarray(msg.position, dtype=np.float64)


def joint_state_msg(q: np.ndarray, fingers: np.ndarray, stamp_ns: int) -> JointState:
    msg = JointState(name=list(ARM_JOINTS + FINGER_JOINTS), position=[float(v) for v in np.concatenate([q, fingers])])
    msg.header.stamp = ns_to_stamp(stamp_ns)
    return msg


def pose_msg(xyz: np.ndarray, quat_xyzw: np.ndarray, stamp_ns: int, frame_id: str = "base") -> PoseStamped:
    msg = PoseStamped()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    p, o = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = (float(v) for v in xyz)
    o.x, o.y, o.z, o.w = (float(v) for v in quat_xyzw)
    return msg


def fingers_from_joint_state(msg: JointState) -> np.ndarray:
    idx = {n: i for i, n in enumerate(msg.name)}
    missing = [n for n in FINGER_JOINTS if n not in idx]
    if missing:
        raise ValueError(f"joint state lacks finger joints {missing}")
    return np.array([msg.position[idx[n]] for n in FINGER_JOINTS])


def state_vector(pose_stamped: PoseStamped, joint_state: JointState) -> np.ndarray:
    """observation.state = ee xyz, ee rpy (the twin's state convention, `pose.state_rpy`), finger positions; float32[8]."""
    p, o = pose_stamped.pose.position, pose_stamped.pose.orientation
    rpy = pose.state_rpy(np.array([o.x, o.y, o.z, o.w]))
    return np.concatenate([[p.x, p.y, p.z], rpy, fingers_from_joint_state(joint_state)]).astype(np.float32)


def status_msg(**fields) -> String:
    return String(data=json.dumps(fields, default=float, sort_keys=True))


class StatusPublisher:
    """A node's JSON status topic: `publish(**fields)` sends only when the status differs from the last one sent."""

    def __init__(self, publisher) -> None:
        self.publisher, self.last = publisher, ""

    def publish(self, **fields) -> None:
        msg = status_msg(**fields)
        if msg.data != self.last:
            self.last = msg.data
            self.publisher.publish(msg)
