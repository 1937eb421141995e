"""Real-to-sim calibration: pure functions that estimate a calibrated twin from what a real robot gives (camera
frames, end-effector states, commanded actions), and the real-proxy's camera effects (a simulated real camera).

Modules: `camera_effects` (the real-proxy's lens/sensor/ISP effects), `camera_pose` (the camera model and an earlier
correlation-ratio search), `silhouette` (camera pose and fov from the robot's silhouette in the calibration motion),
`motion` (the calibration motion file and scripted poses), `response` (end-effector lag from demos),
`randomization` (ranges around calibrated values, one domain per episode seed), `greenscreen` (background estimate
and compositing), `colors` (object colours from real frames), `latency` (action latency from commands vs
end-effector response), `overlay` (real/render blend PNGs).
"""
