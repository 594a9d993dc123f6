"""The modalities, each declared once. Config (`models.<name>`), start-up inspection, the graph,
decode, fusion, training, the output schema and its docs all iterate this registry, so adding a
modality is its record here, its encoder module and its tiny model (models/tiny.py).

A record says:
- `name`: the config section `models.<name>`, the stage's name, the batch columns' prefix
  (`<name>_probs`, `<name>_embedding`, `has_<name>`, `<name>_error`), the output's columns
  (`<name>_valence`, `fusion_weight_<name>`, `<name>_embedding`, `<name>_error`) and fusion's input;
- `tasks`: each task its `models.<name>.task` may name → its encoder class ("module:Class");
  the class says what it reads (`input_columns`) and its embedding size (`embedding_size(cfg)`);
- `media`: what decode must produce for it: "frames", "audio", or "" (text comes from speech or
  sidecar files);
- `scored`: False for a modality that feeds another instead of being scored (speech → text);
  `feeds`: the modality it feeds, and `stand_in`: the stage that feeds it when this section is
  left out (transcripts from sidecar files);
- `has_column`: the output's flag that says the clip was scored on it;
- `columns`: output columns of its own, (name, "string" | "int32" | "float32"), that its encoder
  writes ("", -1 or NaN where it has nothing to say: null in the output).

Nothing here imports a heavy library, or another mmbatch module: the schema is built from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Modality:
    name: str
    tasks: dict[str, str]
    media: str = ""
    scored: bool = True
    has_column: str = ""
    doc: str = ""
    label_tasks: frozenset[str] = field(default_factory=frozenset)  # tasks whose labels map onto the 3 classes
    feeds: str = ""
    stand_in: str = ""
    columns: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if self.scored and not self.has_column:
            object.__setattr__(self, "has_column", f"has_{self.name}")


# In graph order: an encoder runs after those it depends on (text after speech).
REGISTRY: tuple[Modality, ...] = (
    Modality("vision", {"image_zero_shot": "mmbatch.encoders.vision:ImageZeroShotEncoder",
                        "image_classification": "mmbatch.encoders.vision:ImageClassificationEncoder"},
             media="frames", has_column="has_video", label_tasks=frozenset({"image_classification"}),
             doc="sampled frames of the clip"),
    Modality("speech", {"speech_recognition": "mmbatch.encoders.speech:SpeechRecognitionStage"},
             media="audio", scored=False, feeds="text", stand_in="mmbatch.encoders.speech:SidecarTranscriptStage",
             columns=(("transcript_language", "string"),),
             doc="speech to text: the clip's transcript, scored by the text model"),
    Modality("audio", {"audio_classification": "mmbatch.encoders.audio:AudioClassificationEncoder",
                       "audio_zero_shot": "mmbatch.encoders.audio:AudioZeroShotEncoder"},
             media="audio", label_tasks=frozenset({"audio_classification"}),
             doc="the clip's sound (16 kHz mono)"),
    Modality("text", {"text_classification": "mmbatch.encoders.text:TextClassificationEncoder",
                      "text_zero_shot": "mmbatch.encoders.text:TextZeroShotEncoder"},
             label_tasks=frozenset({"text_classification"}),
             doc="the clip's transcript (speech recognition, or sidecar .vtt/.srt/.txt files)"),
    Modality("face", {"face_expression": "mmbatch.encoders.face:FaceExpressionEncoder",
                      "face_classification": "mmbatch.encoders.face:FaceClassificationEncoder"},
             media="frames", label_tasks=frozenset({"face_classification"}),
             columns=(("face_count", "int32"), ("face_expression", "string")),
             doc="the largest face in each sampled frame: its expression"),
)
BY_NAME = {m.name: m for m in REGISTRY}
# The modalities with scores, embeddings and a fusion input of their own, in output column order.
SCORED = tuple(m.name for m in REGISTRY if m.scored)
TASKS = {task: m.name for m in REGISTRY for task in m.tasks}


def encoder_class(task: str):
    """The encoder class a task names (imported now: it may import torch)."""
    return load_class(next(m.tasks[task] for m in REGISTRY if task in m.tasks))


def load_class(path: str):
    """A class from its "module:Class" path."""
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def needs(configured: dict, media: str) -> bool:
    """Whether any configured model section (name → section) needs decode's `media`."""
    return any(BY_NAME[name].media == media for name in configured)
