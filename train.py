"""Train and test a model: ``python train.py experiment=demo`` (see README.md and conf/)."""

from iqa_lightning.train import main

if __name__ == "__main__":
    main()
