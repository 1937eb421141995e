"""Real-to-sim calibration: pure functions that estimate a calibrated twin from what a real robot gives (camera
frames, end-effector states, commanded actions), and the real-proxy's camera effects (a simulated real camera).

Modules: `camera_effects` (the real-proxy's lens/sensor/ISP effects), `camera_pose` (camera pose and field of view
from the rendered robot), `greenscreen` (background estimate and compositing), `colors` (object colours from real
frames), `latency` (action latency from commands vs end-effector response), `overlay` (real/render blend PNGs).
"""
