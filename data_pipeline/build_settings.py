"""What a data directory was built with: the build's settings, checked before anything is read
or written, and recorded in DIR/build_settings.json (and the manifest) so that a rerun over the
same directory can tell whether it asks for the same build."""
import dataclasses

from common.errors import SettingError
from common.tokenizer import MODEL_TYPES, SPECIAL_IDS
from data_pipeline.sources import ENCODING_ERRORS, TEXT_DOCUMENT_UNITS

SETTINGS_NAME = "build_settings.json"


@dataclasses.dataclass(frozen=True)
class BuildSettings:
    input: str
    vocab_size: int = 8000
    model_type: str = "unigram"
    character_coverage: float = 1.0
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    # UTF-8 text per shard; sets the shard count of each split. Small, because each row of
    # lm_dataset holds one shard at a time: 4 MB (~1 M tokens) x 64 rows is ~0.25 GB.
    shard_mb: float = 4.0
    text_document: str = "paragraph"  # text files: paragraph (blank-line separated), line, file
    encoding_errors: str = "strict"   # or "replace": undecodable bytes become U+FFFD
    tfds_data_dir: str | None = None
    tfds_text_key: str = "text"
    # An existing SentencePiece model to encode with instead of training one: target-domain
    # text for fine-tuning must be numbered as the pretrained model's vocabulary.
    spm_model: str | None = None

    def __post_init__(self):
        """Refuses values no build can use, before anything is read or written."""
        choices = {"model_type": MODEL_TYPES, "text_document": TEXT_DOCUMENT_UNITS,
                   "encoding_errors": ENCODING_ERRORS}
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise SettingError(f"{{{field}}}={{value!r}} is not one of {{allowed}}.",
                                   value=getattr(self, field), allowed=allowed)
        if not self.spm_model and self.vocab_size <= len(SPECIAL_IDS):
            raise SettingError("{vocab_size}={value} leaves no piece beside the special ids "
                               "(unk, pad, bos, eos); use a few thousand (default 8000).",
                               value=self.vocab_size)
        for field in ("valid_fraction", "test_fraction"):
            if not 0 <= getattr(self, field) < 1:
                raise SettingError(f"{{{field}}}={{value}} is not a fraction in [0, 1).",
                                   value=getattr(self, field))
        if self.valid_fraction + self.test_fraction >= 1:
            raise SettingError("{valid_fraction} + {test_fraction} = {total} leaves nothing to "
                               "train on; keep their sum well below 1.",
                               total=self.valid_fraction + self.test_fraction)
        if not 0 < self.character_coverage <= 1:
            raise SettingError("{character_coverage}={value} is not in (0, 1].",
                               value=self.character_coverage)
        if self.shard_mb <= 0:
            raise SettingError("{shard_mb}={value} must be positive.", value=self.shard_mb)


def require_same_settings(recorded: dict, settings: BuildSettings, path: str,
                           layout_too: bool = True) -> None:
    """`layout_too=False`: a complete directory with other shard sizes holds the same documents,
    so it serves (directories built before the default shard size went from 64 to 4 MB)."""
    asked = dataclasses.asdict(settings)
    differing = [f"{k}: built with {recorded.get(k)!r}, asked for {v!r}"
                 for k, v in asked.items()
                 if recorded.get(k) != v and (layout_too or k != "shard_mb")]
    if differing:
        raise SettingError("{path} was built with other settings ({differing}). Use another "
                           "{output_dir}, or delete this one to rebuild it.", path=path,
                           differing="; ".join(differing))
