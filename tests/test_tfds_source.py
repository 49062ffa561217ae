"""tfds:NAME[:SPLIT] reads a dataset already prepared in a local data_dir; nothing is downloaded."""
import pytest

from common.errors import CorpusError
from data_pipeline.sources import read_documents

tfds = pytest.importorskip("tensorflow_datasets")


class TinyReviews(tfds.core.GeneratorBasedBuilder):
    """Three short texts, prepared locally by the test."""
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
            {"review": tfds.features.Text(), "label": tfds.features.ClassLabel(num_classes=2)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i, text in enumerate(["good film", "bad plot", "  "]):
            yield i, {"review": text, "label": i % 2}


def test_reads_a_prepared_dataset_by_name(tmp_path):
    TinyReviews(data_dir=str(tmp_path)).download_and_prepare()
    docs = read_documents("tfds:tiny_reviews:train", tfds_data_dir=str(tmp_path),
                          tfds_text_key="review")
    assert sorted(text for _, text in docs) == ["bad plot", "good film"]
    with pytest.raises(CorpusError, match=r"no feature 'text'; set --tfds_text_key to one of"):
        list(read_documents("tfds:tiny_reviews", tfds_data_dir=str(tmp_path)))
    with pytest.raises(CorpusError, match=r"tfds:no_such_set.*nothing is downloaded"):
        list(read_documents("tfds:no_such_set", tfds_data_dir=str(tmp_path)))
