"""One module per published IQA dataset: each reads the authors' files (and pyiqa's) into records.

Adding a dataset is one module here (a :class:`~iqa_lightning.data.pyiqa.PyiqaLayoutDataModule`
subclass declaring its facts in ``spec = DatasetSpec(...)`` and implementing ``read_published``
and ``pyiqa_record``) plus one YAML under ``conf/dataset/``.
"""
