"""Finding faces in a clip's sampled frames: OpenCV's frontal-face Haar cascade, the largest face a
frame. It runs where `models.face.find_faces_in` says: in the face actor (`actor`), or in the decode
worker that made the frames (`decode`), whose rows then carry each frame's face count and box, so
a GPU node's face actor only classifies crops. Either way the same cascade reads the same pixels:
the same faces (tested).

The cascade is the one `opencv-python-headless` ships (`cv2.data`); the fer wheel's copy is the same
cascade in an older file format and finds the same faces (checked on 60 frames of four photos).
"""

from __future__ import annotations

import numpy as np

MIN_FACE_PX = 24  # smaller detections at model frame size are mostly false positives
# The detector's scale step: 1.2 took 20 ms a 224 px frame against 37 at OpenCV's usual 1.1, and found
# the same faces in the test photos (benchmarks/face_port.py measures it).
SCALE_STEP = 1.2
NO_BOX = (-1, -1, -1, -1)  # a frame without a face


class FaceFinder:
    def __init__(self):
        import cv2

        cv2.setNumThreads(1)  # one frame at a time per worker: the pool gives the parallelism
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self.detector = cv2.CascadeClassifier(path)
        if self.detector.empty():
            raise RuntimeError(f"face detector {path} did not load")

    def largest(self, frame: np.ndarray) -> tuple[int, tuple[int, int, int, int]]:
        """(faces in an RGB frame, the largest one's x, y, w, h or NO_BOX)."""
        import cv2

        grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        found = self.detector.detectMultiScale(grey, scaleFactor=SCALE_STEP, minNeighbors=5,
                                               minSize=(MIN_FACE_PX, MIN_FACE_PX))
        if not len(found):
            return 0, NO_BOX
        return len(found), tuple(int(v) for v in max(found, key=lambda b: b[2] * b[3]))

    def in_frames(self, frames: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """For each of `frames` (F, H, W, 3), the first `n` real: its face count (F,) int32 and
        largest face's box (F, 4) int32 (NO_BOX past `n` and where none)."""
        counts = np.zeros(len(frames), dtype=np.int32)
        boxes = np.full((len(frames), 4), NO_BOX, dtype=np.int32)
        for k in range(n):
            counts[k], boxes[k] = self.largest(frames[k])
        return counts, boxes


def largest_faces(frames: np.ndarray, counts: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    """The crops of the frames that hold a face (their largest), in frame order."""
    return [np.ascontiguousarray(frames[k][y:y + h, x:x + w])
            for k, (x, y, w, h) in enumerate(boxes) if counts[k] > 0]
