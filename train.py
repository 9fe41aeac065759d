"""Train / validate / test / predict with a YAML config.

    python train.py fit --config configs/demo.yaml
    python train.py test --config configs/demo.yaml --ckpt_path PATH
"""

from cxr.cli import cli_main

if __name__ == "__main__":
    cli_main()
