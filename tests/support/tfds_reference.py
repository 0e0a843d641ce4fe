"""Run in a subprocess by tests/data/test_catalog.py: a TFDS source read through `mu2hub.data.catalog`, for real.

TFDS lives outside the test environment (the Makefile installs it with `--target .venv/tfds-site`), because its
dependencies (requests, protobuf users, …) have no business in every other test's imports. Writing TFDS's `Image`
feature needs TensorFlow, so this builder stores the same pixels as a uint8 `Tensor`; reading goes through
`tfds.data_source` exactly as for a prepared real dataset.

    python tests/support/tfds_reference.py DATA_DIR   -> prints JSON: sizes and labels of cmaterdb/bangla from TFDS
"""

import dataclasses
import json
import sys

import numpy as np
import tensorflow_datasets as tfds

from mu2hub.data import catalog
from mu2hub.errors import DataSourceError


class TinyCmaterdb(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(8, 8, 3), dtype=np.uint8), "label": tfds.features.ClassLabel(num_classes=10)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(50), "test": self._generate_examples(10)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"image": np.full((8, 8, 3), i, np.uint8), "label": i % 10}


def main(data_dir: str) -> None:
    key = "cmaterdb/bangla"
    catalog.SOURCES[key] = dataclasses.replace(catalog.SOURCES[key], tfds="tiny_cmaterdb:1.*.*")
    try:
        catalog.resolve(key, data_dir=data_dir)
        missing = None
    except DataSourceError as e:
        missing = str(e)
    TinyCmaterdb(data_dir=data_dir, file_format="array_record").download_and_prepare()
    data = catalog.load(key, data_dir=data_dir)
    pixels_are_labels = all(int(im[0, 0, 0]) % 10 == y for s in (data.train, data.validation, data.test)
                            for im, y in zip(s.images, s.labels))
    print(json.dumps({"missing": missing, "sizes": [len(data.train), len(data.validation), len(data.test)],
                      "classes": data.num_classes, "pixels_are_labels": pixels_are_labels}))


if __name__ == "__main__":
    main(sys.argv[1])
