"""rank_sweep: LoRA rank vs. quality (FVD/KID) and cost for Wan2.1 I2V fine-tuning."""

__version__ = "0.1.0"
