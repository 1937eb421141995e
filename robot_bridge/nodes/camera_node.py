"""camera node: an OpenCV capture published as sensor_msgs/Image rgb8 at the spec's size.

Publishes /camera/image_raw at `rate_hz`, stamped with the capture time. `device` is an index ('0') or a
file/URL (a file is replayed from the start when it ends). A failed read publishes nothing: the policy node's
watchdog then holds the arm.
"""

from __future__ import annotations

import cv2
from rclpy.node import Node
from sensor_msgs.msg import Image

from robot_bridge import messages, topics
from robot_bridge.image import to_spec_image
from robot_bridge.nodes import run
from robot_bridge.params import CameraParams, declare

NODE_NAME = "camera"


def open_capture(device: str) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(int(device)) if device.isdigit() else cv2.VideoCapture(device)
    if not cap.isOpened():
        raise ValueError(f"camera.device={device!r}: OpenCV cannot open it; no camera here? replay a video file "
                         f"instead: +params.camera.device=/path/to/video.mp4 (deploy) or -p device:=/path/to/video.mp4")
    return cap


class CameraNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.p = declare(self, CameraParams)
        self.cap = open_capture(self.p.device)
        self.failures = 0
        self.published = 0
        self.pub = self.create_publisher(Image, topics.IMAGE, 2)
        self.create_timer(1.0 / self.p.rate_hz, self._on_timer)

    def _on_timer(self) -> None:
        ok, bgr = self.cap.read()
        if not ok and not self.p.device.isdigit():  # a file: replay from the start
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self.cap.read()
        stamp = self.get_clock().now().nanoseconds
        if not ok:
            self.failures += 1
            self.get_logger().error(f"camera {self.p.device}: read failed ({self.failures})", throttle_duration_sec=1.0)
            return
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        image = to_spec_image(rgb, self.p.image_height, self.p.image_width)
        self.pub.publish(messages.image_to_msg(image, stamp, self.p.frame_id))
        self.published += 1

    def destroy_node(self) -> None:
        self.cap.release()
        super().destroy_node()


def main(args=None) -> None:
    run(CameraNode, args)


if __name__ == "__main__":
    main()
