"""Driving-video capture: MediaPipe tracking of a talking-face video, solved into the row's own rig."""
